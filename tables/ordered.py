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

State per partition: the clock (watermark, next source offset) as the meta,
and per key its buffered events ``[ts, tie, value]`` (in memory tuples: one
object fewer than a list each, and untracked by the collector once it has seen
them if the value is a tuple of scalars, as the fraud pipeline's transactions
are; ``load_value`` turns a stored value back into that form); a key whose
buffer empties is deleted (a tombstone). Only keys whose buffer changed are written,
and a key buffered and released within one batch not at all.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from operator import itemgetter
from typing import (Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Set,
                    Tuple)

from tables.engine import Item, LateItem, S, named_tuple_from
from tables.errors import WeirError
from tables.state import (Entries, Meta, PartitionCache, PartitionClock, PartitionStore,
                          idle_event_time)
from tables.watermark import BoundedOutOfOrderness

_TS_TIE = itemgetter(0, 1)  # a buffered event's (ts, tie, value) -> (ts, tie)
_RELEASE_ORDER = itemgetter(1, 2, 0)  # a `Released`'s (ts, tie, key)


class Released(NamedTuple):
    """A buffered event the watermark has passed: its key, event time, tie and value (a
    named tuple: one per event on the fraud pipeline's hot path)."""

    key: str
    ts_ms: int
    tie: str
    value: Any


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
    buffers: Dict[str, List[Tuple[int, str, Any]]]  # key -> [(ts, tie, value), ...]
    heap: List[Tuple[int, str, str]] = field(default_factory=list)  # (ts, tie, key)
    stored: Set[str] = field(default_factory=set)  # keys the store holds a buffer of
    last_event_wall_ms: Optional[int] = None
    max_event_at_last_event: Optional[int] = None


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
        load_value = self.load_value
        state = _PartitionBuffers(clock, {k: [(ts, tie, load_value(value)) for ts, tie, value in v]
                                          for k, v in entries.items()},
                                  stored=set(entries))
        state.heap = [(ts, tie, key) for key, listed in state.buffers.items()
                      for ts, tie, _ in listed]
        heapq.heapify(state.heap)
        return state

    def clock(self, partition: int) -> PartitionClock:
        return self._state(partition).clock

    def buffered(self, partition: int) -> int:
        """How many events wait in the partition's buffers."""
        return len(self._state(partition).heap)

    def process(self, partition: int, items: Sequence[Item[S]], next_offset: Optional[int] = None,
                now_ms: Optional[int] = None) -> ReleaseResult:
        """Buffer a batch of one partition's keyed events (in offset order), release what
        the watermark passed. ``now_ms`` (wall clock) is what idle advance counts from.

        The batch's events that its own final watermark passes are released without
        entering the buffers (at full speed most of a batch: its event-time span is
        larger than the out-of-orderness), sorted with the earlier batches' releases."""
        state = self._state(partition)
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
            arrived.append(named_tuple_from(Released, (key, ts, tie_of(value), value)))
            if max_ts is None or ts > max_ts:
                max_ts = ts
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
            buffers, heap = state.buffers, state.heap
            for event in arrived:
                if watermark is not None and event.ts_ms < watermark:
                    fresh.append(event)
                    continue
                key, ts, tie, value = event
                buffers.setdefault(key, []).append((ts, tie, value))
                heapq.heappush(heap, (ts, tie, key))
                changed.add(key)
            if fresh:  # stable: earlier batches' events first among equals, then arrival order
                result.released += fresh
                result.released.sort(key=_RELEASE_ORDER)
        if clock.next_offset != offset_before or changed:
            self._save(partition, state, changed)
        result.watermark_ms = watermark
        return result

    def advance_idle(self, partition: int, now_ms: int, idle_timeout_ms: int) -> ReleaseResult:
        """Let event time follow the wall clock on a partition idle for ``idle_timeout_ms``."""
        state = self._state(partition)
        result = ReleaseResult()
        target = idle_event_time(state, now_ms, idle_timeout_ms)
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
        values: Dict[str, Iterator[Any]] = {}  # per key, its released values in order
        for key, n in taken.items():
            listed = state.buffers[key]
            if len(listed) > 1:
                listed.sort(key=_TS_TIE)  # stable: equal (ts, tie) keep their arrival order
            values[key] = iter([value for _, _, value in listed[:n]])
            if n < len(listed):
                state.buffers[key] = listed[n:]
            else:
                del state.buffers[key]
            changed.add(key)
        result.released += [named_tuple_from(Released, (key, ts, tie, next(values[key])))
                             for ts, tie, key in popped]

    def _save(self, partition: int, state: _PartitionBuffers, changed: Set[str]) -> None:
        """Write the changed keys' buffers; delete the emptied ones the store holds (a key
        buffered and released within one batch never reaches the store)."""
        updated = {key: state.buffers[key] for key in changed if key in state.buffers}
        deleted = [key for key in changed if key not in state.buffers and key in state.stored]
        state.stored.update(updated)
        state.stored.difference_update(deleted)
        self.store.save(partition, state.clock.to_meta(), updated, deleted)
