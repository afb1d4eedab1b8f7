"""Batch oracle of the pageview windows: the exact merged records from the whole input.

Apart from the engine and the aggregators on purpose: per partition it walks
the pageviews in offset order with the watermark at arrival as a prefix
maximum, puts each pageview in every window ``[s, s + size)`` holding it
(``s`` a multiple of ``advance``) unless that window's end plus the allowed
lateness is at or below the watermark (then it is late), and builds each
window's record over all partitions once the global watermark (the minimum
of the partitions' final watermarks) has reached its end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Set, Tuple

from tests.oracle import hopping_starts


@dataclass(frozen=True)
class View:
    partition: int
    offset: int
    ts_ms: int
    session_id: str
    user_id: Optional[str]
    page: str
    referrer: Optional[str]


def top(counts: Dict[str, int], k: int) -> List[List]:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [[name, n] for name, n in ranked[:k]]


def expected_windows(views: List[View], size_ms: int, advance_ms: int, delay_ms: int,
                     top_pages: int = 10, top_referrers: int = 5):
    """(records by window start, late (partition, offset, start, end, watermark) set)."""
    members: Dict[int, List[View]] = {}
    late: Set[Tuple[int, int, int, int, int]] = set()
    finals = []
    for p in sorted({v.partition for v in views}):
        highest = None
        for v in sorted((v for v in views if v.partition == p), key=lambda v: v.offset):
            wm = None if highest is None else highest - delay_ms
            for start in hopping_starts(v.ts_ms, size_ms, advance_ms):
                if wm is not None and start + size_ms <= wm:
                    late.add((p, v.offset, start, start + size_ms, wm))
                else:
                    members.setdefault(start, []).append(v)
            highest = v.ts_ms if highest is None else max(highest, v.ts_ms)
        finals.append(highest - delay_ms)
    global_wm = min(finals)
    records = {}
    for start, vs in members.items():
        if start + size_ms > global_wm:
            continue
        pages: Dict[str, int] = {}
        refs: Dict[str, int] = {}
        for v in vs:
            pages[v.page] = pages.get(v.page, 0) + 1
            if v.referrer is not None:
                refs[v.referrer] = refs.get(v.referrer, 0) + 1
        records[start] = {
            "windowStart": start, "windowEnd": start + size_ms, "pageViews": len(vs),
            "activeUsers": len({v.session_id for v in vs}),
            "identifiedUsers": len({v.user_id for v in vs if v.user_id is not None}),
            "topPages": top(pages, top_pages), "topReferrers": top(refs, top_referrers),
        }
    return records, late
