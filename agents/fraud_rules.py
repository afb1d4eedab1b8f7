"""The fraud rules as pure functions over one user's state (no Kafka, no Faust).

A transaction here is a plain tuple ``(id, user, amount, location, ts, lat,
lon)`` (fields `ID` to `LON`; ``lat``/``lon`` both numbers or both None): JSON-able
(a list once stored, which reads the same), and, holding scalars only, soon left
alone by the garbage collector (a dict per transaction was tracked for as long
as its transaction waited). The rules:

- ``LARGE_AMOUNT`` (`FraudRules.large_amount`): ``amount > large_amount``;
  checked on arrival for every transaction that is not a duplicate.
- ``HIGH_FREQUENCY`` and ``IMPOSSIBLE_TRAVEL`` (`FraudRules.evaluate`): fed a
  user's non-late transactions in ``(ts, id)`` order (`tables.ordered`
  releases them so). For a transaction T::

      frequency window W = 60 s, max 5
      count = the user's transactions with ts in (T.ts - W, T.ts]   (ties after T included)
      count > 5 -> HIGH_FREQUENCY, then none for that user while ts < T.ts + W

      P = the user's previous transaction in (ts, id) order
      both with lat/lon: speed = haversine(P, T) / (T.ts - P.ts) > max km/h -> alert
                         (0 ms apart and distance > 0: infinite speed; distance 0: never)
      otherwise:        P.location != T.location and T.ts - P.ts < travel window -> alert

The user state is bounded: the times of the last ``max + 1`` transactions
within the frequency window (enough to decide ``count > max``; so ``count``
is reported up to ``max + 1``), the previous transaction, and the time of the
last HIGH_FREQUENCY alert. It is one flat tuple of scalars ``(hfAlertTs, prevId,
prevLocation, prevTs, prevLat, prevLon, *recent)`` (JSON: a flat list; the
``prev`` fields all None before the first transaction). One tuple of scalars:
CPython's garbage collector stops tracking it once it has seen it, so a worker
holding 100,000 users' states does not walk them in each full collection (with
dicts and lists: pauses of 100 to 280 ms, every few seconds at full speed), and
a user's update allocates one object that outlives its batch (nested tuples made
four, each walked by the collector before it let them go).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tables.errors import ConfigError

EARTH_RADIUS_KM = 6371.0088
Tx = Sequence[Any]  # (id, user, amount, location, ts, lat, lon): a tuple, or a list once stored
ID, USER, AMOUNT, LOCATION, TS, LAT, LON = range(7)  # the fields of a Tx
Previous = Tuple[str, str, int, Optional[float], Optional[float]]  # id, location, ts, lat, lon
UserState = Tuple[Any, ...]  # hfAlertTs, prevId, prevLocation, prevTs, prevLat, prevLon, *recent
HF_ALERT_TS, PREV_FROM, RECENT_FROM = 0, 1, 6  # where a UserState's parts are
_NO_PREVIOUS = (None,) * (RECENT_FROM - PREV_FROM)
Alert = Dict[str, Any]


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance between two points given in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def load_user_state(stored: Any) -> UserState:
    """A user state as stored (JSON: a flat list; the ``[recent, prev, hfAlertTs]`` lists and
    the dicts of earlier versions are read too) -> the tuple `FraudRules.evaluate` returns."""
    if isinstance(stored, dict):
        prev = stored["prev"]
        fields = _NO_PREVIOUS if prev is None else (
            prev["id"], prev["location"], prev["ts"], prev["lat"], prev["lon"])
        return (stored["hfAlertTs"], *fields, *stored["recent"])
    if stored and isinstance(stored[0], list):  # [recent, prev, hfAlertTs]
        recent, prev, hf_alert_ts = stored
        return (hf_alert_ts, *(_NO_PREVIOUS if prev is None else prev), *recent)
    return tuple(stored)


@dataclass(frozen=True)
class FraudRules:
    """Thresholds of the rules; see the module docstring for what each means."""

    large_amount: float = 10_000.0
    frequency_window_ms: int = 60_000
    frequency_max: int = 5
    max_speed_kmh: float = 900.0
    travel_window_ms: int = 60_000

    def __post_init__(self) -> None:
        for name in ("frequency_window_ms", "frequency_max", "travel_window_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be an integer > 0, got {value!r}")
        if not self.max_speed_kmh > 0 or not math.isfinite(self.max_speed_kmh):
            raise ConfigError(f"max_speed_kmh must be a finite number > 0, got {self.max_speed_kmh!r}")
        if not self.large_amount >= 0 or not math.isfinite(self.large_amount):
            raise ConfigError(f"large_amount must be a finite number >= 0, got {self.large_amount!r}")

    def large_amount_alert(self, tx: Tx) -> Optional[Alert]:
        if tx[AMOUNT] > self.large_amount:
            return _alert("LARGE_AMOUNT", tx, amount=tx[AMOUNT], threshold=self.large_amount)
        return None

    def evaluate(self, state: Optional[Sequence[Any]],
                 txs: Sequence[Tx]) -> Tuple[UserState, List[Alert]]:
        """Apply the ordered rules to ``txs`` (one user's, in ``(ts, id)`` order, all after
        the ones ``state`` has seen); return the new state and the alerts in order.
        ``state`` may also be the JSON list a stored state loads as."""
        if state is None:
            recent: List[int] = []
            prev, hf_alert_ts = None, None
        else:
            hf_alert_ts = state[HF_ALERT_TS]
            prev = None if state[PREV_FROM] is None else tuple(state[PREV_FROM:RECENT_FROM])
            recent = list(state[RECENT_FROM:])
        alerts: List[Alert] = []
        window_ms, most = self.frequency_window_ms, self.frequency_max
        keep = most + 1  # enough to tell count > most
        count, added = len(txs), 0  # txs[:added] are in recent
        for tx in txs:
            ts = tx[TS]
            while added < count and txs[added][TS] == ts:  # ties count for T too
                recent.append(ts)
                added += 1
            # keep the times in (ts - window, ts], the newest `keep` of them (ascending: the
            # transactions come in (ts, id) order)
            if recent[0] <= ts - window_ms or len(recent) > keep:
                recent = recent[max(bisect_right(recent, ts - window_ms), len(recent) - keep):]
            if len(recent) > most and (hf_alert_ts is None or ts >= hf_alert_ts + window_ms):
                hf_alert_ts = ts  # then none while ts < this one's + window: once per burst
                alerts.append(_alert("HIGH_FREQUENCY", tx, count=len(recent),
                                     windowMs=window_ms))
            if prev is not None:
                alert = self._travel(prev, tx)
                if alert:
                    alerts.append(alert)
            prev = (tx[ID], tx[LOCATION], ts, tx[LAT], tx[LON])
        return (hf_alert_ts, *(_NO_PREVIOUS if prev is None else prev), *recent), alerts

    def _travel(self, prev: Previous, tx: Tx) -> Optional[Alert]:
        _, location, ts, lat, lon = prev
        apart_ms = tx[TS] - ts
        if lat is not None and tx[LAT] is not None:  # lat and lon come together
            km = haversine_km(lat, lon, tx[LAT], tx[LON])
            if km == 0:
                return None
            speed = math.inf if apart_ms == 0 else km / (apart_ms / 3_600_000)
            if speed <= self.max_speed_kmh:
                return None
            return _travel_alert(prev, tx, apart_ms, km, None if math.isinf(speed) else speed)
        if location != tx[LOCATION] and apart_ms < self.travel_window_ms:
            return _travel_alert(prev, tx, apart_ms, None, None)
        return None


def _travel_alert(prev: Previous, tx: Tx, apart_ms: int, km: Optional[float],
                  speed: Optional[float]) -> Alert:
    previous_id, previous_location = prev[0], prev[1]  # of (id, location, ts, lat, lon)
    return _alert("IMPOSSIBLE_TRAVEL", tx, fromLocation=previous_location,
                  toLocation=tx[LOCATION], previousTransactionId=previous_id,
                  timeApartMs=apart_ms, distanceKm=km, speedKmh=speed)


def _alert(kind: str, tx: Tx, **details: Any) -> Alert:
    return {"alertId": f"{kind}:{tx[ID]}", "type": kind, "userId": tx[USER],
            "transactionId": tx[ID], "timestamp": tx[TS], **details}


def load_transaction(stored: Any) -> Tx:
    """A buffered transaction as stored (JSON: a list; the dict of earlier versions is read
    too) -> the tuple the rules take."""
    if isinstance(stored, dict):
        return (stored["id"], stored["user"], stored["amount"], stored["location"],
                stored["ts"], stored["lat"], stored["lon"])
    return tuple(stored)
