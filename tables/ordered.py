"""Per-key buffers released in event-time order once the watermark passes them.

Per source partition the watermark is the highest event time seen minus the
allowed out-of-orderness (none before the first event). An event with
``ts < watermark`` when it arrives is *late*: handed back, never buffered.
Every other event is buffered under its key until the watermark passes it
(``ts < watermark``), then released. Released events come out in
``(ts, tie, key)`` order, ``tie`` being a value the caller derives from the
event (an id), so the releases do not depend on arrival order::

    out-of-orderness 5 s, one key
    ts=10s "b" -> buffered                        watermark  5s
    ts=10s "a" -> buffered                        watermark  5s
    ts= 8s "c" -> buffered (8s >= 5s)             watermark  5s
    ts=16s "d" -> buffered; watermark 11s: releases c@8s, a@10s, b@10s
    ts= 9s "e" -> late (9s < 11s)

An event that is not late has ``ts >= watermark``, so it is after every event
already released: per key, the releases are exactly the non-late events in
``(ts, tie)`` order. Releasing once per batch (at its end) gives the same
releases as releasing after every event; the batch's own events that its final
watermark passes never enter the buffers (nor the heap, nor the store).

With idle advance, a partition that received nothing for ``idle_timeout_ms``
of wall-clock time lets its highest event time grow with the wall clock from
then on (as the window engine does), so the last buffered events are released.

State per partition: the clock (watermark, next source offset) and where its
buffered events came from, as the meta; the buffers themselves live in memory
only. The source is their log: the meta's ``replayFrom`` is the lowest source
offset of a buffered event, ``replayWatermarkMs`` the watermark they all are at
or past, and ``dropped`` the offsets from ``replayFrom`` on that the caller did
not hand over (duplicates, bad input: `process`'s ``dropped``). After a load the
caller reads the source from ``replayFrom`` up to the next offset and hands the
records it can decode to `replay`, which buffers again exactly the events that
were buffered: those neither dropped nor behind that watermark (an event behind
it was late on arrival or released since)::

    stored meta: nextOffset 120, replayFrom 100, replayWatermarkMs 5s, dropped [104]
    replay(records 100..119): offset 104 skipped (dropped), ts < 5s skipped,
                              every other one buffered again

So a batch writes one record, the meta, whatever it buffers or releases (each
buffered event written once and deleted once cost about 8% of the fraud worker's
CPU). Buffers stored by earlier versions (``<key> -> [[ts, tie, value], ...]``)
are read at load and kept in the store, rewritten as their events are released,
until none is left. In memory a buffered event is a tuple ``(ts, tie, value,
offset)`` (one object: untracked by the collector once it has seen it if the
value is a tuple of scalars, as the fraud pipeline's transactions are;
``load_value`` turns a stored value back into that form).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from operator import itemgetter
from typing import (Any, Callable, Deque, Dict, Iterable, Iterator, List, NamedTuple, Optional,
                    Sequence, Set, Tuple)

from tables.engine import Item, LateItem, S, named_tuple_from
from tables.errors import WeirError
from tables.state import (Entries, Meta, PartitionCache, PartitionClock, PartitionStore,
                          idle_event_time)
from tables.watermark import BoundedOutOfOrderness

_TS_TIE = itemgetter(0, 1)  # a buffered event's (ts, tie, value, offset) -> (ts, tie)
_RELEASE_ORDER = itemgetter(1, 2, 0)  # a `Released`'s (ts, tie, key)


class Released(NamedTuple):
    """A buffered event the watermark has passed: its key, event time, tie, value and source
    offset (None for one an earlier version stored) (a named tuple: one per event on the
    fraud pipeline's hot path)."""

    key: str
    ts_ms: int
    tie: str
    value: Any
    offset: Optional[int] = None


@dataclass
class ReleaseResult:
    """What one batch (or idle tick) produced: late events, then releases in order."""

    late: List[LateItem] = field(default_factory=list)
    released: List[Released] = field(default_factory=list)
    skipped: int = 0
    watermark_ms: Optional[int] = None


@dataclass
class _PartitionBuffers:
    clock: PartitionClock
    #: key -> [(ts, tie, value, offset), ...]
    buffers: Dict[str, List[Tuple[int, str, Any, Optional[int]]]] = field(default_factory=dict)
    heap: List[Tuple[int, str, str]] = field(default_factory=list)  # (ts, tie, key)
    #: source offsets of the buffered events, ascending; some already released (`released`)
    offsets: Deque[int] = field(default_factory=deque)
    released: Set[int] = field(default_factory=set)
    #: offsets the caller dropped, ascending, from the lowest buffered one on
    dropped: List[int] = field(default_factory=list)
    #: the source range to read again and the watermark of the stored meta (after a load)
    replay: Optional[Tuple[int, int, int]] = None
    stored: Set[str] = field(default_factory=set)  # keys an earlier version stored buffers of
    last_event_wall_ms: Optional[int] = None
    max_event_at_last_event: Optional[int] = None

    def replay_from(self) -> Optional[int]:
        """The lowest source offset of a buffered event (None when nothing is buffered)."""
        offsets, released = self.offsets, self.released
        while offsets and offsets[0] in released:
            released.discard(offsets.popleft())
        return offsets[0] if offsets else None


class OrderedRelease(PartitionCache[_PartitionBuffers]):
    """Buffers keyed events per source partition; releases them in event-time order."""

    def __init__(self, max_out_of_orderness_ms: int, store: PartitionStore,
                 tie: Callable[[Any], str] = lambda value: "",
                 load_value: Callable[[Any], Any] = lambda value: value) -> None:
        BoundedOutOfOrderness(max_out_of_orderness_ms)  # validates the setting
        super().__init__(store)
        self.max_out_of_orderness_ms = max_out_of_orderness_ms
        self.tie = tie
        self.load_value = load_value  # a stored (JSON) value -> the value as buffered

    def _load(self, partition: int, meta: Meta, entries: Entries) -> _PartitionBuffers:
        clock = PartitionClock.from_meta(meta, self.max_out_of_orderness_ms)
        state = _PartitionBuffers(clock, stored=set(entries))
        load_value = self.load_value
        for key, listed in entries.items():  # an earlier version's: kept until released
            state.buffers[key] = [(ts, tie, load_value(value), None)
                                  for ts, tie, value, *_ in listed]
        state.heap = [(ts, tie, key) for key, listed in state.buffers.items()
                      for ts, tie, _, _ in listed]
        heapq.heapify(state.heap)
        start = meta.get("replayFrom")
        if start is not None:
            state.replay = (start, clock.next_offset, meta["replayWatermarkMs"])
            state.dropped = list(meta.get("dropped", ()))
        return state

    def clock(self, partition: int) -> PartitionClock:
        return self._state(partition).clock

    def buffered(self, partition: int) -> int:
        """How many events wait in the partition's buffers."""
        return len(self._state(partition).heap)

    def replay_span(self, partition: int) -> Optional[Tuple[int, int]]:
        """The source offsets ``[start, end)`` to read and hand to `replay` before the
        partition's next batch (its buffered events), or None: nothing to read."""
        replay = self._state(partition).replay
        return None if replay is None else replay[:2]

    def replay(self, partition: int, items: Iterable[Item[S]],
               span: Optional[Tuple[int, int]] = None, final: bool = True) -> int:
        """Buffer again, from the source records of `replay_span` (decoded as for `process`;
        those that cannot be are among the dropped), the events that were buffered. With
        ``span``, only if that is still the span to replay (the partition was not loaded
        again meanwhile). A long span can come in pieces, in offset order, the last one
        ``final``. Returns how many were buffered."""
        state = self._state(partition)
        if state.replay is None or (span is not None and tuple(span) != state.replay[:2]):
            return 0
        start, end, watermark = state.replay
        dropped = set(state.dropped)
        tie_of = self.tie
        buffers, heap, offsets = state.buffers, state.heap, state.offsets
        count = 0
        for item in sorted(items, key=lambda i: i.offset):
            offset, ts, key = item.offset, item.ts_ms, item.key
            if not start <= offset < end or offset in dropped or ts < watermark:
                continue
            if offsets and offset <= offsets[-1]:
                continue  # given twice
            tie = tie_of(item.value)
            buffers.setdefault(key, []).append((ts, tie, item.value, offset))
            heap.append((ts, tie, key))
            offsets.append(offset)
            count += 1
        heapq.heapify(heap)
        if final:
            state.replay = None
        return count

    def process(self, partition: int, items: Sequence[Item[S]], next_offset: Optional[int] = None,
                now_ms: Optional[int] = None, dropped: Sequence[int] = ()) -> ReleaseResult:
        """Buffer a batch of one partition's keyed events (in offset order), release what
        the watermark passed. ``now_ms`` (wall clock) is what idle advance counts from;
        ``dropped`` are the batch's offsets the caller did not hand over although they
        hold a record (its duplicates, its bad input): a replay must skip them.

        The batch's events that its own final watermark passes are released without
        entering the buffers (at full speed most of a batch: its event-time span is
        larger than the out-of-orderness), sorted with the earlier batches' releases."""
        state = self._state(partition)
        if state.replay is not None:
            raise WeirError(f"partition {partition}: its buffers must be replayed from offsets "
                            f"{state.replay[0]}..{state.replay[1] - 1} first (replay_span)")
        clock = state.clock
        wm = clock.watermark
        delay = wm.max_out_of_orderness_ms
        max_ts = wm.max_event_ms
        tie_of = self.tie
        result = ReleaseResult()
        late = result.late
        arrived: List[Released] = []  # not late, in arrival order
        offset_before = next_expected = clock.next_offset
        for item in items:
            key, offset, ts = item.key, item.offset, item.ts_ms
            if key is None:
                raise WeirError(f"ordered events need a key; offset {offset} has none")
            if offset < next_expected:  # an earlier run processed it (`PartitionClock`)
                result.skipped += 1
                continue
            next_expected = offset + 1
            if max_ts is not None and ts < max_ts - delay:
                late.append(LateItem(item, ts, ts + 1, max_ts - delay))
                continue
            value = item.value
            arrived.append(named_tuple_from(Released, (key, ts, tie_of(value), value, offset)))
            if max_ts is None or ts > max_ts:
                max_ts = ts
        if dropped:
            state.dropped += [o for o in dropped if o >= clock.next_offset]
        clock.next_offset = next_expected
        wm.max_event_ms = max_ts
        if items and now_ms is not None:
            state.last_event_wall_ms = now_ms
            state.max_event_at_last_event = max_ts
        clock.advance_to(next_offset)
        changed: Set[str] = set()
        self._release(state, result, changed)  # the earlier batches' events, in order
        watermark = wm.watermark_ms
        if arrived:
            fresh = []
            buffers, heap, offsets = state.buffers, state.heap, state.offsets
            for event in arrived:
                if watermark is not None and event.ts_ms < watermark:
                    fresh.append(event)
                    continue
                key, ts, tie, value, offset = event
                buffers.setdefault(key, []).append((ts, tie, value, offset))
                heapq.heappush(heap, (ts, tie, key))
                offsets.append(offset)
            if fresh:  # stable: earlier batches' events first among equals, then arrival order
                result.released += fresh
                result.released.sort(key=_RELEASE_ORDER)
        if clock.next_offset != offset_before or changed or arrived:
            self._save(partition, state, changed)
        result.watermark_ms = watermark
        return result

    def advance_idle(self, partition: int, now_ms: int, idle_timeout_ms: int) -> ReleaseResult:
        """Let event time follow the wall clock on a partition idle for ``idle_timeout_ms``
        (nothing while its buffers wait for `replay`)."""
        state = self._state(partition)
        result = ReleaseResult()
        target = None if state.replay else idle_event_time(state, now_ms, idle_timeout_ms)
        if target is None:
            return result
        state.clock.watermark.observe(target)
        changed: Set[str] = set()
        self._release(state, result, changed)
        self._save(partition, state, changed)
        result.watermark_ms = state.clock.watermark.watermark_ms
        return result

    def _release(self, state: _PartitionBuffers, result: ReleaseResult,
                 changed: Set[str]) -> None:
        """Pop, in ``(ts, tie, key)`` order, every buffered event with ``ts < watermark``."""
        watermark = state.clock.watermark.watermark_ms
        heap = state.heap
        popped: List[Tuple[int, str, str]] = []  # in release order
        while watermark is not None and heap and heap[0][0] < watermark:
            popped.append(heapq.heappop(heap))
        taken: Dict[str, int] = {}
        for _, _, key in popped:
            taken[key] = taken.get(key, 0) + 1
        events: Dict[str, Iterator[Tuple[Any, Optional[int]]]] = {}  # per key, in order
        released = state.released
        for key, n in taken.items():
            listed = state.buffers[key]
            if len(listed) > 1:
                listed.sort(key=_TS_TIE)  # stable: equal (ts, tie) keep their arrival order
            events[key] = iter([(value, offset) for _, _, value, offset in listed[:n]])
            released.update(offset for _, _, _, offset in listed[:n])
            if n < len(listed):
                state.buffers[key] = listed[n:]
            else:
                del state.buffers[key]
            changed.add(key)
        released.discard(None)
        result.released += [named_tuple_from(Released, (key, ts, tie, *next(events[key])))
                            for ts, tie, key in popped]

    def _save(self, partition: int, state: _PartitionBuffers, changed: Set[str]) -> None:
        """Write the meta (see the module docstring); of the buffers an earlier version
        stored, rewrite the changed ones and delete the emptied ones."""
        updated: Entries = {}
        deleted: List[str] = []
        if state.stored:
            for key in changed & state.stored:
                kept = [(ts, tie, value) for ts, tie, value, offset in state.buffers.get(key, ())
                        if offset is None]
                if kept:
                    updated[key] = kept
                else:
                    deleted.append(key)
            state.stored.difference_update(deleted)
        meta = state.clock.to_meta()
        start = state.replay_from()
        if start is not None:
            dropped = state.dropped
            if dropped and dropped[0] < start:
                del dropped[:bisect_left(dropped, start)]
            meta["replayFrom"] = start
            meta["replayWatermarkMs"] = state.clock.watermark.watermark_ms
            if dropped:
                meta["dropped"] = list(dropped)
        else:
            state.dropped.clear()
        self.store.save(partition, meta, updated, deleted)
