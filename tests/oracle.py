"""Batch oracle: the expected outputs of the orders pipeline from the whole input.

Written apart from the engine on purpose (no shared windowing code): for each
source partition it takes the events in offset order, computes each event's
watermark at arrival as a prefix maximum, decides lateness from it, and groups
the rest by window. A window is expected on the output when the partition's
final watermark has reached its end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple


@dataclass(frozen=True)
class InputEvent:
    partition: int
    offset: int
    ts_ms: int
    amount: float


@dataclass(frozen=True)
class ExpectedLate:
    partition: int
    offset: int
    window_start: int
    watermark: int


@dataclass
class Expected:
    windows: Dict[Tuple[int, int], Tuple[int, float]]  # (partition, start) -> (count, revenue)
    late: List[ExpectedLate]
    size_ms: int


def window_start(ts_ms: int, size_ms: int) -> int:
    # floor division written differently from the engine on purpose
    return int(math.floor(ts_ms / size_ms)) * size_ms if abs(ts_ms) < 2**52 else ts_ms - ts_ms % size_ms


def expected_outputs(events: Iterable[InputEvent], size_ms: int, delay_ms: int) -> Expected:
    by_partition: Dict[int, List[InputEvent]] = {}
    for e in events:
        by_partition.setdefault(e.partition, []).append(e)
    windows: Dict[Tuple[int, int], List[float]] = {}
    late: List[ExpectedLate] = []
    closed_before: Dict[int, Optional[int]] = {}
    for p, evs in by_partition.items():
        evs.sort(key=lambda e: e.offset)
        prefix_max: Optional[int] = None
        for e in evs:
            wm = None if prefix_max is None else prefix_max - delay_ms
            start = window_start(e.ts_ms, size_ms)
            if wm is not None and start + size_ms <= wm:
                late.append(ExpectedLate(p, e.offset, start, wm))
            else:
                windows.setdefault((p, start), []).append(e.amount)
            prefix_max = e.ts_ms if prefix_max is None else max(prefix_max, e.ts_ms)
        closed_before[p] = None if prefix_max is None else prefix_max - delay_ms
    emitted = {
        key: (len(amounts), math.fsum(amounts))
        for key, amounts in windows.items()
        if closed_before[key[0]] is not None and key[1] + size_ms <= closed_before[key[0]]
    }
    return Expected(emitted, late, size_ms)
