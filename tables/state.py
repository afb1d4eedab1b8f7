"""Per-partition engine state and the stores that keep it.

Every engine keeps, per source partition, a small *meta* record (its event
clock and the next source offset to fold in, so that a replay after a restart
is skipped, not counted twice) and *entries*: JSON values under string keys
(a window's accumulator under its start, a key's sessions under the key...).
A store persists both; `InMemoryStore` serves unit tests,
`tables.faust_store.FaustTableStore` the workers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, Generic, Iterable, List, Optional, Protocol, Tuple, TypeVar

from tables.watermark import BoundedOutOfOrderness

Meta = Dict[str, Any]
Entries = Dict[str, Any]


@dataclass
class PartitionClock:
    """A partition's event clock (watermark) and the next source offset to fold in."""

    watermark: BoundedOutOfOrderness
    next_offset: int = 0

    @classmethod
    def from_meta(cls, meta: Meta, max_out_of_orderness_ms: int) -> "PartitionClock":
        wm = BoundedOutOfOrderness(max_out_of_orderness_ms, meta.get("maxEventMs"))
        return cls(wm, meta.get("nextOffset", 0))

    def to_meta(self) -> Meta:
        return {"maxEventMs": self.watermark.max_event_ms, "nextOffset": self.next_offset}

    def is_replay(self, offset: int) -> bool:
        """True for an input an earlier run already folded into the stored state."""
        return offset < self.next_offset

    def advance_to(self, next_offset: Optional[int]) -> None:
        if next_offset is not None and next_offset > self.next_offset:
            self.next_offset = next_offset


class PartitionStore(Protocol):
    """Persists one engine's state per source partition."""

    def load(self, partition: int) -> Tuple[Meta, Entries]:
        """The stored meta and entries of ``partition``; ``({}, {})`` when there are none."""

    def save(self, partition: int, meta: Meta, updated: Entries, deleted: Iterable[str]) -> None:
        """Write the meta, the entries a batch changed, and delete the ones it removed."""


class InMemoryStore:
    """A `PartitionStore` in dicts, for tests and tools; survives engine restarts."""

    def __init__(self) -> None:
        self.meta: Dict[int, Meta] = {}
        self.entries: Dict[int, Entries] = {}

    def load(self, partition: int) -> Tuple[Meta, Entries]:
        return (copy.deepcopy(self.meta.get(partition, {})),
                copy.deepcopy(self.entries.get(partition, {})))

    def save(self, partition: int, meta: Meta, updated: Entries, deleted: Iterable[str]) -> None:
        self.meta[partition] = copy.deepcopy(meta)
        stored = self.entries.setdefault(partition, {})
        for key in deleted:
            stored.pop(key, None)
        for key, value in updated.items():
            stored[key] = copy.deepcopy(value)


T = TypeVar("T")


class PartitionCache(Generic[T]):
    """In-memory state per source partition, loaded from the store on first use.

    Subclasses say how to build a partition's state from what the store holds
    (`_load`); the cache keeps it until the partition leaves this worker.
    """

    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self._partitions: Dict[int, T] = {}

    def _load(self, partition: int, meta: Meta, entries: Entries) -> T:
        raise NotImplementedError

    def _state(self, partition: int) -> T:
        state = self._partitions.get(partition)
        if state is None:
            meta, entries = self.store.load(partition)
            state = self._partitions[partition] = self._load(partition, meta, entries)
        return state

    def partitions(self) -> List[int]:
        return sorted(self._partitions)

    def forget(self, partition: int) -> None:
        """Drop the cached state of a partition this worker no longer owns."""
        self._partitions.pop(partition, None)


class SourceOffsets(PartitionCache[PartitionClock]):
    """Only the next source offset per partition: for stages that keep no other state (a
    forwarder), so a replay after a restart is recognised and skipped."""

    def _load(self, partition: int, meta: Meta, entries: Entries) -> PartitionClock:
        return PartitionClock.from_meta(meta, 0)

    def clock(self, partition: int) -> PartitionClock:
        return self._state(partition)

    def save(self, partition: int) -> None:
        self.store.save(partition, self._state(partition).to_meta(), {}, [])


def idle_event_time(state: Any, now_ms: int, idle_timeout_ms: int) -> Optional[int]:
    """Where an idle partition's event time has got to, or None if it has not moved.

    ``state`` has the partition's ``clock``, ``last_event_wall_ms`` and
    ``max_event_at_last_event``. Once no event came for ``idle_timeout_ms`` of wall
    clock, event time follows the wall clock from the last event's time on::

        last event at wall 100 s (event time 50 s), timeout 30 s:
        wall 140 s -> event time 60 s; wall 125 s -> no move
    """
    if state.last_event_wall_ms is None:  # nothing seen since this worker took it
        state.last_event_wall_ms = now_ms
        state.max_event_at_last_event = state.clock.watermark.max_event_ms
    idle_ms = now_ms - state.last_event_wall_ms - idle_timeout_ms
    base = state.max_event_at_last_event
    max_event_ms = state.clock.watermark.max_event_ms
    if idle_ms <= 0 or base is None or base + idle_ms <= (max_event_ms or base):
        return None
    return base + idle_ms
