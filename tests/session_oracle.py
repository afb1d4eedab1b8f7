"""Batch oracle for session windows: expected outputs of one partition's events.

Written apart from `tables.sessions` on purpose (no shared code, no heaps, no
lazy deadlines): it replays the events in offset order, rescanning every
session of the key at each step, and keeps a snapshot of every session each
time the contract says it is (re-)emitted. What it computes exactly:

- the late events, with the would-be session and the watermark at arrival;
- per (key, start) the number of emissions and the last one's (end, count, sum);
- the (key, start) pairs retracted by a merge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple


@dataclass(frozen=True)
class KeyedEvent:
    offset: int
    key: str
    ts_ms: int
    value: int


@dataclass
class _Sess:
    key: str
    first: int
    last: int
    values: List[int]
    shown: bool = False  # emitted with its current content


@dataclass
class SessionExpectation:
    late: Set[Tuple[int, int, int, int]] = field(default_factory=set)  # offset, start, end+gap, wm
    emissions: Dict[Tuple[str, int], int] = field(default_factory=dict)  # (key, start) -> count
    last: Dict[Tuple[str, int], Tuple[int, int, int]] = field(default_factory=dict)  # end, n, sum
    retracted: Set[Tuple[str, int]] = field(default_factory=set)
    members: Dict[Tuple[str, int], List[int]] = field(default_factory=dict)  # values, last emission

    def final_sessions(self) -> Dict[Tuple[str, int], Tuple[int, int, int]]:
        """The last emission of every (key, start) that was not retracted."""
        return {k: v for k, v in self.last.items() if k not in self.retracted}


def expected_sessions(events: List[KeyedEvent], gap: int, delay: int,
                      lateness: int) -> SessionExpectation:
    out = SessionExpectation()
    alive: List[_Sess] = []
    highest: Optional[int] = None
    for e in sorted(events, key=lambda x: x.offset):
        wm = None if highest is None else highest - delay
        if wm is not None:  # sessions past their allowed lateness are gone
            alive = [s for s in alive if s.last + gap + lateness > wm]
        near = [s for s in alive if s.key == e.key and s.first - gap < e.ts_ms < s.last + gap]
        first = min([e.ts_ms] + [s.first for s in near])
        last = max([e.ts_ms] + [s.last for s in near])
        if wm is not None and last + gap + lateness <= wm:
            out.late.add((e.offset, first, last + gap, wm))
        else:
            for s in near:
                if s.first != first and (s.key, s.first) in out.emissions:
                    out.retracted.add((s.key, s.first))
            values = [v for s in near for v in s.values] + [e.value]
            alive = [s for s in alive if all(s is not n for n in near)]
            alive.append(_Sess(e.key, first, last, values))
        highest = e.ts_ms if highest is None else max(highest, e.ts_ms)
        _show_due(alive, highest - delay, gap, out)
    return out


def _show_due(alive: List[_Sess], wm: int, gap: int, out: SessionExpectation) -> None:
    """Every session due at ``wm`` whose content was not emitted yet is emitted now."""
    for s in alive:
        if s.last + gap <= wm and not s.shown:
            s.shown = True
            ident = (s.key, s.first)
            out.emissions[ident] = out.emissions.get(ident, 0) + 1
            out.last[ident] = (s.last, len(s.values), sum(s.values))
            out.members[ident] = list(s.values)
