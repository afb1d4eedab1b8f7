"""Event-time aggregation over fixed windows (tumbling or hopping), in batches.

Per source partition the engine keeps an event clock (watermark: highest event
time minus the allowed out-of-orderness) and the windows not yet purged. For
each event, in offset order, and each window ``[start, end)`` holding it:

- ``end + allowed_lateness <= watermark``: the window is gone; the event is
  *late* for it and handed back (one late record per missed window), never counted;
- ``end <= watermark``: the window has fired but is within its allowed
  lateness; the event updates it and the window is emitted again, next revision;
- otherwise the event is folded into the open window.

Whenever the watermark advances, every open window whose end it reached fires
(revision 0), oldest first; windows are purged (tombstoned) once the
watermark passes ``end + allowed_lateness``::

    tumbling 60 s, out-of-orderness 10 s, allowed lateness 30 s
    ts=5s   -> [0,60s) opens                         watermark -5s
    ts=71s  -> watermark 61s: [0,60s) fires, revision 0
    ts=30s  -> [0,60s) fired, 61 < 60+30: updated, revision 1
    ts=101s -> watermark 91s >= 90s: [0,60s) purged
    ts=40s  -> late for [0,60s): late-events

Batches give exactly the outputs of event-at-a-time processing, in the same order.
"""

from __future__ import annotations

import copy
import heapq
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, Generic, List, NamedTuple, Optional, Sequence, Tuple,
                    TypeVar, Union)

from tables.aggregators import Aggregator
from tables.state import (Entries, Meta, PartitionCache, PartitionClock, PartitionStore,
                          idle_event_time)
from tables.watermark import BoundedOutOfOrderness
from tables.windows import HoppingWindow, TumblingWindow

S = TypeVar("S")
FixedWindow = Union[TumblingWindow, HoppingWindow]

#: builds a named tuple from a plain tuple of its fields, ``named_tuple_from(Item, (...))``,
#: without the class's generated Python-level ``__new__``: half the cost, for the named
#: tuples built once per event on the hot paths
named_tuple_from = tuple.__new__


class Item(NamedTuple, Generic[S]):
    """One decoded event: source offset, event time, value to fold, origin, optional key.
    (A named tuple: built once per event, it costs a third of a frozen dataclass.)"""

    offset: int
    ts_ms: int
    value: Any
    source: S
    key: Optional[str] = None


@dataclass(frozen=True)
class WindowResult:
    """One emission of a window: revision 0 when it fires, then one per late update."""

    partition: int
    start_ms: int
    end_ms: int
    acc: Any
    revision: int


@dataclass(frozen=True)
class LateItem(Generic[S]):
    """An event that arrived after a window holding it was gone."""

    item: Item[S]
    window_start_ms: int
    window_end_ms: int
    watermark_ms: int

    @property
    def late_by_ms(self) -> int:
        """How far the watermark at arrival was past the event's own time."""
        return self.watermark_ms - self.item.ts_ms


@dataclass
class BatchResult(Generic[S]):
    """What one batch (or one idle tick) produced, in emission order."""

    emitted: List[WindowResult] = field(default_factory=list)
    late: List[LateItem[S]] = field(default_factory=list)
    too_far_ahead: List[Item[S]] = field(default_factory=list)
    skipped: int = 0
    watermark_ms: Optional[int] = None


@dataclass
class _Window:
    acc: Any
    revision: int = -1  # -1: not fired yet

    def to_entry(self) -> Dict[str, Any]:
        return {"acc": self.acc, "rev": self.revision}


@dataclass
class _PartitionWindows:
    clock: PartitionClock
    windows: Dict[int, _Window]
    pending: List[Tuple[int, int]]  # heap of (end, start) of windows not fired yet
    last_event_wall_ms: Optional[int] = None
    max_event_at_last_event: Optional[int] = None


class WindowEngine(PartitionCache[_PartitionWindows]):
    """Fixed-window aggregation in event time, one state per source partition."""

    def __init__(
        self,
        window: FixedWindow,
        max_out_of_orderness_ms: int,
        aggregator: Aggregator,
        store: PartitionStore,
        max_future_skew_ms: Optional[int] = None,
        wall_clock_ms: Optional[Callable[[], int]] = None,
    ) -> None:
        BoundedOutOfOrderness(max_out_of_orderness_ms)  # validates the setting
        super().__init__(store)
        self.window = window
        self.max_out_of_orderness_ms = max_out_of_orderness_ms
        self.aggregator = aggregator
        self.max_future_skew_ms = max_future_skew_ms
        self.wall_clock_ms = wall_clock_ms

    # ---------------------------------------------------------------- state

    def _load(self, partition: int, meta: Meta, entries: Entries) -> _PartitionWindows:
        """Re-index a partition's recovered windows: the unfired ones wait for the watermark."""
        clock = PartitionClock.from_meta(meta, self.max_out_of_orderness_ms)
        windows = {int(k): _Window(v["acc"], v["rev"]) for k, v in entries.items()}
        pending = [(self.window.end_of(s), s) for s, w in windows.items() if w.revision < 0]
        heapq.heapify(pending)
        return _PartitionWindows(clock, windows, pending)

    def clock(self, partition: int) -> PartitionClock:
        return self._state(partition).clock

    # ---------------------------------------------------------------- processing

    def process(
        self, partition: int, items: Sequence[Item[S]], next_offset: Optional[int] = None
    ) -> BatchResult[S]:
        """Fold a batch of one partition's events (in offset order).

        ``next_offset`` is the offset after the batch's last input, when inputs
        the engine never saw (dead letters) follow its last item.
        """
        state = self._state(partition)
        clock = state.clock
        wm = clock.watermark
        result: BatchResult[S] = BatchResult()
        changed: Dict[int, _Window] = {}
        offset_before = clock.next_offset
        now_ms = self.wall_clock_ms() if self.wall_clock_ms else None
        horizon = None
        if self.max_future_skew_ms is not None and now_ms is not None:
            horizon = now_ms + self.max_future_skew_ms
        lateness = self.window.allowed_lateness_ms
        for item in items:
            if clock.is_replay(item.offset):
                result.skipped += 1
                continue
            clock.next_offset = item.offset + 1
            ts = item.ts_ms
            if horizon is not None and ts > horizon:
                result.too_far_ahead.append(item)
                continue
            watermark = wm.watermark_ms
            for start in self.window.starts_of(ts):
                end = self.window.end_of(start)
                if watermark is not None and end + lateness <= watermark:
                    result.late.append(LateItem(item, start, end, watermark))
                    continue
                due = watermark is not None and end <= watermark
                win = state.windows.get(start)
                if win is None:
                    win = state.windows[start] = _Window(self.aggregator.zero())
                    if not due:
                        heapq.heappush(state.pending, (end, start))
                self.aggregator.add(win.acc, item.value)
                changed[start] = win
                if due:  # fired already (or due with no events before): emit the update
                    win.revision += 1
                    result.emitted.append(self._emission(partition, start, win))
            if watermark is None or ts - self.max_out_of_orderness_ms > watermark:
                wm.observe(ts)
                self._fire(partition, state, result, changed)
        if items and now_ms is not None:
            state.last_event_wall_ms = now_ms
            state.max_event_at_last_event = wm.max_event_ms
        clock.advance_to(next_offset)
        if clock.next_offset != offset_before or changed:
            self._save(partition, state, changed)
        result.watermark_ms = wm.watermark_ms
        return result

    def advance_idle(self, partition: int, now_ms: int, idle_timeout_ms: int) -> BatchResult[S]:
        """Let event time follow the wall clock on a partition idle for ``idle_timeout_ms``.

        After the timeout the partition's highest event time grows by the wall
        time elapsed since the timeout, so its last windows close.
        """
        state = self._state(partition)
        result: BatchResult[S] = BatchResult()
        target = idle_event_time(state, now_ms, idle_timeout_ms)
        if target is None:
            return result
        state.clock.watermark.observe(target)
        changed: Dict[int, _Window] = {}
        self._fire(partition, state, result, changed)
        self._save(partition, state, changed)
        result.watermark_ms = state.clock.watermark.watermark_ms
        return result

    # ---------------------------------------------------------------- helpers

    def _fire(self, partition: int, state: _PartitionWindows, result: BatchResult,
              changed: Dict[int, _Window]) -> None:
        """Fire, oldest first, every window whose end the watermark has reached."""
        watermark = state.clock.watermark.watermark_ms
        pending = state.pending
        while pending and pending[0][0] <= watermark:
            _end, start = heapq.heappop(pending)
            win = state.windows.get(start)
            if win is None or win.revision >= 0:
                continue
            win.revision = 0
            changed[start] = win
            result.emitted.append(self._emission(partition, start, win))

    def _emission(self, partition: int, start: int, win: _Window) -> WindowResult:
        return WindowResult(partition, start, self.window.end_of(start),
                            copy.deepcopy(win.acc), win.revision)

    def _save(self, partition: int, state: _PartitionWindows, changed: Dict[int, _Window]) -> None:
        """Persist changed windows and the clock; purge windows past their lateness."""
        watermark = state.clock.watermark.watermark_ms
        horizon = self.window.allowed_lateness_ms
        purged = []
        if watermark is not None:
            purged = [s for s, w in state.windows.items()
                      if w.revision >= 0 and self.window.end_of(s) + horizon <= watermark]
        for start in purged:
            del state.windows[start]
            changed.pop(start, None)
        updated = {str(s): w.to_entry() for s, w in changed.items()}
        self.store.save(partition, state.clock.to_meta(), updated, [str(s) for s in purged])
