"""Batch oracle: the expected outputs of a windowed aggregation from the whole input.

Written apart from the engine on purpose (no shared windowing code). For each
source partition it takes the events in offset order and computes every
event's watermark at arrival as a prefix maximum. From that it derives, per
event and window, whether the event is late, on time, or a revision of a
window that has already fired, and so every emission (window, revision,
totals) of the partition, plus the merged totals across partitions.
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


@dataclass(frozen=True)
class Emission:
    partition: int
    start: int
    revision: int
    count: int
    total: float


@dataclass
class Expected:
    emissions: List[Emission]  # per source partition, every revision
    late: List[ExpectedLate]
    final_watermarks: Dict[int, Optional[int]]
    size_ms: int

    @property
    def windows(self) -> Dict[Tuple[int, int], Tuple[int, float]]:
        """Final (count, total) of each emitted (partition, window start)."""
        final: Dict[Tuple[int, int], Tuple[int, float]] = {}
        for e in sorted(self.emissions, key=lambda e: e.revision):
            final[(e.partition, e.start)] = (e.count, e.total)
        return final

    def merged(self) -> Dict[int, Tuple[int, float]]:
        """Final totals per window start over all partitions, for windows the global
        watermark (minimum of the partitions' final watermarks) has reached."""
        marks = [wm for wm in self.final_watermarks.values()]
        if not marks or any(wm is None for wm in marks):
            return {}
        global_wm = min(marks)
        sums: Dict[int, List[float]] = {}
        counts: Dict[int, int] = {}
        for (p, start), (count, total) in self.windows.items():
            if start + self.size_ms <= global_wm:
                counts[start] = counts.get(start, 0) + count
                sums.setdefault(start, []).append(total)
        return {s: (counts[s], math.fsum(sums[s])) for s in counts}


def hopping_starts(ts_ms: int, size_ms: int, advance_ms: int) -> List[int]:
    """Every multiple of advance_ms whose window [s, s + size) holds ts, by brute force."""
    k = math.floor((ts_ms - size_ms) / advance_ms) - 1
    starts = []
    while k * advance_ms <= ts_ms:
        s = k * advance_ms
        if s <= ts_ms < s + size_ms:
            starts.append(s)
        k += 1
    return starts


def expected_outputs(events: Iterable[InputEvent], size_ms: int, delay_ms: int,
                     lateness_ms: int = 0, advance_ms: Optional[int] = None) -> Expected:
    advance = advance_ms or size_ms
    by_partition: Dict[int, List[InputEvent]] = {}
    for e in events:
        by_partition.setdefault(e.partition, []).append(e)
    emissions: List[Emission] = []
    late: List[ExpectedLate] = []
    finals: Dict[int, Optional[int]] = {}
    for p, evs in by_partition.items():
        evs.sort(key=lambda e: e.offset)
        amounts: Dict[int, List[float]] = {}
        revision: Dict[int, int] = {}
        prefix_max: Optional[int] = None
        for e in evs:
            wm = None if prefix_max is None else prefix_max - delay_ms
            for start in hopping_starts(e.ts_ms, size_ms, advance):
                end = start + size_ms
                if wm is not None and end + lateness_ms <= wm:
                    late.append(ExpectedLate(p, e.offset, start, wm))
                    continue
                amounts.setdefault(start, []).append(e.amount)
                if wm is not None and end <= wm:  # fired already: this event re-emits it
                    revision[start] = revision.get(start, -1) + 1
                    emissions.append(Emission(p, start, revision[start], len(amounts[start]),
                                              math.fsum(amounts[start])))
            new_max = e.ts_ms if prefix_max is None else max(prefix_max, e.ts_ms)
            if prefix_max is None or new_max > prefix_max:
                new_wm = new_max - delay_ms
                for start in sorted(amounts):  # windows this advance fires
                    end = start + size_ms
                    if start not in revision and end <= new_wm:
                        revision[start] = 0
                        emissions.append(Emission(p, start, 0, len(amounts[start]),
                                                  math.fsum(amounts[start])))
            prefix_max = new_max
        finals[p] = None if prefix_max is None else prefix_max - delay_ms
    return Expected(emissions, late, finals, size_ms)
