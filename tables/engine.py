"""Event-time windowed aggregation over batches of events from one partition.

For each source partition the engine keeps a watermark (highest event time
minus the allowed out-of-orderness) and the open windows. An event is folded
into its window unless that window had already closed when it arrived: then
it is *late* and handed back, never counted. After each batch every window
whose end the watermark has reached is closed, returned once, and removed::

    size 60 s, out-of-orderness 10 s, one partition, events in arrival order
    ts=5s  -> [0,60s) opens                  watermark -5s
    ts=71s -> [60s,120s) opens               watermark 61s -> [0,60s) closes
    ts=30s -> window [0,60s) closed at 61s   late by 31s, not counted

Batches give the same result as event-at-a-time processing: lateness is
decided against the watermark as it stood before each event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Generic, List, Optional, Sequence, TypeVar

from tables.aggregators import Aggregator
from tables.state import PartitionState, WindowStore
from tables.watermark import BoundedOutOfOrderness
from tables.windows import TumblingWindow

S = TypeVar("S")


@dataclass(frozen=True)
class Item(Generic[S]):
    """One decoded event: source offset, event time, value to fold, origin."""

    offset: int
    ts_ms: int
    value: Any
    source: S


@dataclass(frozen=True)
class ClosedWindow:
    """A window whose watermark passed its end, with its final accumulator."""

    partition: int
    start_ms: int
    end_ms: int
    acc: List[Any]


@dataclass(frozen=True)
class LateItem(Generic[S]):
    """An event whose window had closed when it arrived."""

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
    """What one batch produced: closed windows (by start), late events, replays skipped."""

    closed: List[ClosedWindow] = field(default_factory=list)
    late: List[LateItem[S]] = field(default_factory=list)
    skipped: int = 0
    watermark_ms: Optional[int] = None


class WindowEngine:
    """Tumbling-window aggregation in event time, one state per source partition."""

    def __init__(
        self,
        window: TumblingWindow,
        max_out_of_orderness_ms: int,
        aggregator: Aggregator,
        store: WindowStore,
    ) -> None:
        BoundedOutOfOrderness(max_out_of_orderness_ms)  # validates the setting
        self.window = window
        self.max_out_of_orderness_ms = max_out_of_orderness_ms
        self.aggregator = aggregator
        self.store = store
        self._partitions: Dict[int, PartitionState] = {}

    def state(self, partition: int) -> PartitionState:
        """The partition's state, loaded from the store on first use."""
        state = self._partitions.get(partition)
        if state is None:
            max_event_ms, next_offset, windows = self.store.load(partition)
            wm = BoundedOutOfOrderness(self.max_out_of_orderness_ms, max_event_ms)
            state = PartitionState(wm, next_offset, windows)
            self._partitions[partition] = state
        return state

    def forget(self, partition: int) -> None:
        """Drop the cached state of a partition this worker no longer owns."""
        self._partitions.pop(partition, None)

    def process(
        self, partition: int, items: Sequence[Item[S]], next_offset: Optional[int] = None
    ) -> BatchResult[S]:
        """Fold a batch of one partition's events (in offset order) and close windows.

        ``next_offset`` is the offset after the batch's last input, when inputs
        the engine never saw (dead letters) follow its last item.
        """
        state = self.state(partition)
        result: BatchResult[S] = BatchResult()
        wm = state.watermark
        windows = state.windows
        updated: Dict[int, List[Any]] = {}
        offset_before = state.next_offset
        size = self.window.size_ms
        add = self.aggregator.add
        for item in items:
            if item.offset < state.next_offset:
                result.skipped += 1
                continue
            start = item.ts_ms // size * size
            watermark = wm.watermark_ms
            if watermark is not None and start + size <= watermark:
                result.late.append(LateItem(item, start, start + size, watermark))
            else:
                acc = windows.get(start)
                if acc is None:
                    acc = windows[start] = self.aggregator.zero()
                add(acc, item.value)
                updated[start] = acc
            wm.observe(item.ts_ms)
            state.next_offset = item.offset + 1
        if next_offset is not None and next_offset > state.next_offset:
            state.next_offset = next_offset
        result.closed = self._close(partition, state)
        result.watermark_ms = wm.watermark_ms
        if state.next_offset == offset_before and not result.closed:
            return result
        for closed in result.closed:
            updated.pop(closed.start_ms, None)
        deleted = [c.start_ms for c in result.closed]
        self.store.save(partition, wm.max_event_ms, state.next_offset, updated, deleted)
        return result

    def _close(self, partition: int, state: PartitionState) -> List[ClosedWindow]:
        """Remove and return, oldest first, the windows the watermark has passed."""
        watermark = state.watermark.watermark_ms
        if watermark is None:
            return []
        size = self.window.size_ms
        due = sorted(s for s in state.windows if s + size <= watermark)
        return [
            ClosedWindow(partition, s, s + size, state.windows.pop(s)) for s in due
        ]
