"""Merging per-partition partial window results into global ones.

Each source partition's `WindowEngine` emits its partial accumulator of a
window (revision 0 when its own watermark passes the window end, then one per
late update) and reports its watermark. The merge keeps, per window, the
latest partial of every source partition and a global watermark: the minimum
over the source partitions' watermarks, leaving out partitions idle for
``idle_timeout_ms`` of wall-clock time (as Flink's ``withIdleness``); when
every partition is idle it is the highest of their watermarks; it never goes
back. A window is emitted once, revision 0, when the global watermark
reaches its end, then again (next revision) for each partial that updates it
within the allowed lateness, and purged once the global watermark passes
``end + allowed_lateness``::

    partitions 0 and 1, window [0, 60s)
    p0 partial (3 orders), p0 watermark 61s   global min(61s, p1 unknown) -> wait
    p1 partial (2 orders), p1 watermark 65s   global 61s -> emit 5 orders, revision 0
    p1 revised partial (3 orders)             emit 6 orders, revision 1

A partial that arrives after its window was purged (a partition back from
idleness with old data) is handed back as late, never dropped.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from tables.aggregators import Aggregator
from tables.state import PartitionStore

STORE_PARTITION = 0


@dataclass(frozen=True)
class MergedWindow:
    start_ms: int
    end_ms: int
    acc: Any
    revision: int


@dataclass(frozen=True)
class LatePartial:
    source_partition: int
    start_ms: int
    end_ms: int
    acc: Any
    watermark_ms: int


@dataclass
class MergeResult:
    emitted: List[MergedWindow] = field(default_factory=list)
    late: List[LatePartial] = field(default_factory=list)
    watermark_ms: Optional[int] = None


class MergeEngine:
    """Global windows from the partial results of ``source_partitions`` partitions."""

    def __init__(self, source_partitions: int, aggregator: Aggregator, allowed_lateness_ms: int,
                 idle_timeout_ms: int, store: PartitionStore) -> None:
        self.source_partitions = source_partitions
        self.aggregator = aggregator
        self.allowed_lateness_ms = allowed_lateness_ms
        self.idle_timeout_ms = idle_timeout_ms
        self.store = store
        self._loaded = False
        self._watermarks: Dict[int, int] = {}
        self._global: Optional[int] = None
        self._windows: Dict[int, Dict[str, Any]] = {}
        self._last_seen: Dict[int, int] = {}
        self._started_ms: Optional[int] = None
        self.next_offset = 0
        self._changed: set = set()
        self._purged: List[int] = []

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self, now_ms: int) -> None:
        meta, entries = self.store.load(STORE_PARTITION)
        self._watermarks = {int(p): wm for p, wm in meta.get("watermarks", {}).items()}
        self._global = meta.get("globalMs")
        self.next_offset = meta.get("nextOffset", 0)
        self._windows = {int(k): v for k, v in entries.items()}
        self._last_seen = {}
        self._started_ms = now_ms
        self._loaded = True

    def forget(self) -> None:
        self._loaded = False

    @property
    def watermark_ms(self) -> Optional[int]:
        return self._global

    # ---------------------------------------------------------------- inputs

    def on_partial(self, source: int, start_ms: int, end_ms: int, acc: Any, now_ms: int,
                   result: MergeResult) -> None:
        """Take the latest partial of ``source`` for window ``[start_ms, end_ms)``."""
        self._last_seen[source] = now_ms
        if self._global is not None and end_ms + self.allowed_lateness_ms <= self._global:
            result.late.append(LatePartial(source, start_ms, end_ms, acc, self._global))
            return
        win = self._windows.setdefault(start_ms, {"end": end_ms, "partials": {}, "rev": -1})
        win["partials"][str(source)] = acc
        self._changed.add(start_ms)
        if win["rev"] >= 0:
            win["rev"] += 1
            result.emitted.append(self._merged(start_ms, win))

    def on_watermark(self, source: int, watermark_ms: int, now_ms: int, result: MergeResult) -> None:
        self._last_seen[source] = now_ms
        if watermark_ms > self._watermarks.get(source, watermark_ms - 1):
            self._watermarks[source] = watermark_ms
        self.advance(now_ms, result)

    def advance(self, now_ms: int, result: MergeResult) -> None:
        """Recompute the global watermark (idleness included) and fire what it passed."""
        target = self._global_target(now_ms)
        if target is not None and (self._global is None or target > self._global):
            self._global = target
            for start in sorted(s for s, w in self._windows.items()
                                if w["rev"] < 0 and w["end"] <= target):
                win = self._windows[start]
                win["rev"] = 0
                self._changed.add(start)
                result.emitted.append(self._merged(start, win))
            for start in [s for s, w in self._windows.items()
                          if w["rev"] >= 0 and w["end"] + self.allowed_lateness_ms <= target]:
                del self._windows[start]
                self._changed.discard(start)
                self._purged.append(start)
        result.watermark_ms = self._global

    def _global_target(self, now_ms: int) -> Optional[int]:
        started = self._started_ms if self._started_ms is not None else now_ms
        active = [p for p in range(self.source_partitions)
                  if now_ms - self._last_seen.get(p, started) < self.idle_timeout_ms]
        if not active:  # everything is quiet: the most advanced partition leads
            return max(self._watermarks.values(), default=None)
        if any(p not in self._watermarks for p in active):
            return None
        return min(self._watermarks[p] for p in active)

    def _merged(self, start_ms: int, win: Dict[str, Any]) -> MergedWindow:
        total = self.aggregator.zero()
        for acc in win["partials"].values():
            self.aggregator.merge(total, acc)
        return MergedWindow(start_ms, win["end"], copy.deepcopy(total), win["rev"])

    # ---------------------------------------------------------------- persistence

    def save(self) -> None:
        meta = {"watermarks": {str(p): wm for p, wm in self._watermarks.items()},
                "globalMs": self._global, "nextOffset": self.next_offset}
        updated = {str(s): self._windows[s] for s in self._changed}
        self.store.save(STORE_PARTITION, meta, updated, [str(s) for s in self._purged])
        self._changed.clear()
        self._purged.clear()
