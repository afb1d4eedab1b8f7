"""Batch oracle for fraud alerts: the expected alerts and late transactions of a whole input.

Written apart from `agents.fraud_rules` and `tables.ordered` on purpose (no
shared code, no buffers, no capped state): per partition it walks the input
in offset order only to decide duplicates and lateness, then sorts each
user's non-late transactions and applies the rules by brute force, scanning
the whole list for every transaction.

- dedup: only the first occurrence of a ``transactionId`` in a partition counts;
- late: ``timestamp < watermark`` at arrival, the watermark being the highest
  timestamp of the partition's earlier first occurrences minus the delay
  (late ones do not move it);
- evaluated: the non-late transactions with ``timestamp < final watermark``
  (the streaming side has not released the others yet);
- ``count`` of HIGH_FREQUENCY is reported up to ``max + 1`` (the contract).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Set, Tuple


@dataclass(frozen=True)
class Tx:
    partition: int
    offset: int
    id: str
    user: str
    amount: float
    location: str
    ts: int
    lat: Optional[float] = None
    lon: Optional[float] = None


@dataclass(frozen=True)
class Thresholds:
    delay_ms: int = 5_000
    large: float = 10_000.0
    freq_window_ms: int = 60_000
    freq_max: int = 5
    speed_kmh: float = 900.0
    travel_window_ms: int = 60_000


def great_circle_km(a_lat: float, a_lon: float, b_lat: float, b_lon: float) -> float:
    """Spherical law of haversines with the mean earth radius (km)."""
    r = 6371.0088
    la1, la2 = a_lat * math.pi / 180, b_lat * math.pi / 180
    d_la = la2 - la1
    d_lo = (b_lon - a_lon) * math.pi / 180
    x = math.sin(d_la / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin(d_lo / 2) ** 2
    return 2 * r * math.atan2(math.sqrt(x), math.sqrt(max(0.0, 1 - x)))


def expected(txs: List[Tx], t: Thresholds) -> Tuple[Dict[str, dict], Set[Tuple[int, int, int]]]:
    """Alerts by ``alertId`` (without ``detectedAt``), and late ones as (partition, offset,
    watermark at arrival)."""
    alerts: Dict[str, dict] = {}
    late: Set[Tuple[int, int, int]] = set()
    for p in sorted({x.partition for x in txs}):
        seen: Set[str] = set()
        kept: List[Tx] = []
        highest: Optional[int] = None
        for x in sorted((x for x in txs if x.partition == p), key=lambda x: x.offset):
            if x.id in seen:
                continue
            seen.add(x.id)
            if x.amount > t.large:
                alerts[f"LARGE_AMOUNT:{x.id}"] = _alert("LARGE_AMOUNT", x, amount=x.amount,
                                                        threshold=t.large)
            if highest is not None and x.ts < highest - t.delay_ms:
                late.add((p, x.offset, highest - t.delay_ms))
                continue
            kept.append(x)
            highest = x.ts if highest is None else max(highest, x.ts)
        if highest is None:
            continue
        final_wm = highest - t.delay_ms
        by_user: Dict[str, List[Tx]] = {}
        for x in kept:
            by_user.setdefault(x.user, []).append(x)
        for user in sorted(by_user):
            mine = sorted((x for x in by_user[user] if x.ts < final_wm),
                          key=lambda x: (x.ts, x.id))
            _ordered_rules(mine, t, alerts)
    return alerts, late


def _ordered_rules(mine: List[Tx], t: Thresholds, alerts: Dict[str, dict]) -> None:
    last_hf: Optional[int] = None
    for i, x in enumerate(mine):
        count = sum(1 for y in mine if x.ts - t.freq_window_ms < y.ts <= x.ts)
        if count > t.freq_max and (last_hf is None or x.ts >= last_hf + t.freq_window_ms):
            last_hf = x.ts
            alerts[f"HIGH_FREQUENCY:{x.id}"] = _alert(
                "HIGH_FREQUENCY", x, count=min(count, t.freq_max + 1), windowMs=t.freq_window_ms)
        if i == 0:
            continue
        prev = mine[i - 1]
        apart = x.ts - prev.ts
        info = dict(fromLocation=prev.location, toLocation=x.location,
                    previousTransactionId=prev.id, timeApartMs=apart, distanceKm=None,
                    speedKmh=None)
        coords = [prev.lat, prev.lon, x.lat, x.lon]
        if all(c is not None for c in coords):
            km = great_circle_km(*coords)
            if km > 0 and (apart == 0 or km / apart * 3_600_000 > t.speed_kmh):
                info.update(distanceKm=km, speedKmh=None if apart == 0 else km / apart * 3_600_000)
                alerts[f"IMPOSSIBLE_TRAVEL:{x.id}"] = _alert("IMPOSSIBLE_TRAVEL", x, **info)
        elif prev.location != x.location and apart < t.travel_window_ms:
            alerts[f"IMPOSSIBLE_TRAVEL:{x.id}"] = _alert("IMPOSSIBLE_TRAVEL", x, **info)


def _alert(kind: str, x: Tx, **details) -> dict:
    base = {"alertId": f"{kind}:{x.id}", "type": kind, "userId": x.user, "transactionId": x.id,
            "timestamp": x.ts, "amount": None, "threshold": None, "count": None,
            "windowMs": None, "fromLocation": None, "toLocation": None,
            "previousTransactionId": None, "timeApartMs": None, "distanceKm": None,
            "speedKmh": None}
    base.update(details)
    return base
