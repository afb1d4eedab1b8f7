"""Per-partition window state and the stores that keep it.

A source partition's state is its watermark, the next source offset not yet
folded in (so a replay after a restart is skipped, not counted twice) and its
open windows keyed by start. Stores persist it; `InMemoryStore` serves unit
tests, `tables.faust_store.FaustTableStore` the workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Protocol, Tuple

from tables.watermark import BoundedOutOfOrderness


@dataclass
class PartitionState:
    """What the engine knows of one source partition."""

    watermark: BoundedOutOfOrderness
    next_offset: int = 0
    windows: Dict[int, List[Any]] = field(default_factory=dict)


StoredState = Tuple[Optional[int], int, Dict[int, List[Any]]]


class WindowStore(Protocol):
    """Persists partition state: (max event time, next offset, open windows)."""

    def load(self, partition: int) -> StoredState:
        """The stored state of ``partition``; ``(None, 0, {})`` when there is none."""

    def save(
        self,
        partition: int,
        max_event_ms: Optional[int],
        next_offset: int,
        updated: Dict[int, List[Any]],
        deleted: Iterable[int],
    ) -> None:
        """Write the windows changed by one batch and the partition's progress."""


class InMemoryStore:
    """A `WindowStore` in a dict, for tests and tools; survives engine restarts."""

    def __init__(self) -> None:
        self.meta: Dict[int, Tuple[Optional[int], int]] = {}
        self.windows: Dict[int, Dict[int, List[Any]]] = {}

    def load(self, partition: int) -> StoredState:
        max_event_ms, next_offset = self.meta.get(partition, (None, 0))
        stored = self.windows.get(partition, {})
        return max_event_ms, next_offset, {s: list(a) for s, a in stored.items()}

    def save(self, partition, max_event_ms, next_offset, updated, deleted) -> None:
        self.meta[partition] = (max_event_ms, next_offset)
        stored = self.windows.setdefault(partition, {})
        for start in deleted:
            stored.pop(start, None)
        for start, acc in updated.items():
            stored[start] = list(acc)
