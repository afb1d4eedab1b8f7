"""The dashboard's feed state: the last hour of the output topics, in memory.

`DashboardState` is fed the records of the output topics (by `app.dashboard_reader`)
and the consumer lag (by `app.consumer_lag`); the web routes (`app.web`) send
its `snapshot()` to a page that connects and then its `delta(since)` every
push interval. It knows nothing of Kafka or HTTP.

Windows (order metrics, tumbling pageview metrics) are kept per window start,
and a record replaces the one kept only when its ``revision`` is higher: a
repeated or older revision changes nothing, so no window is counted twice.
The window history is bounded in event time: a series keeps the windows
starting at or after ``newest windowEnd - history_ms``::

    horizon = newest end - history          newest end
        |<------------------ history_ms ------------>|
    [w][w][w] ... [w][w][w]   (windows starting before the horizon are dropped)

Late events, dead letters and fraud alerts have no window of their own: they
are counted in one-minute buckets of the record's Kafka timestamp, and buckets
older than ``now - history_ms`` (wall clock) are dropped by `expire`.

Every change bumps ``version``; each window point and each section records
the version that last changed it, so `delta(since)` holds exactly what changed
after ``since``. Points leave only by the horizon, which a delta carries.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from app.clock import wall_clock_ms

MINUTE_MS = 60_000
FRAUD_ALERTS_KEPT = 20
SECTIONS = ("top", "sessions", "late", "dead", "fraud", "lag")


@dataclass
class _Series:
    """Window points of one kind, by window start, bounded in event time."""

    history_ms: int
    points: Dict[int, Dict[str, Any]] = field(default_factory=dict)
    newest_end: Optional[int] = None

    @property
    def horizon(self) -> Optional[int]:
        return None if self.newest_end is None else self.newest_end - self.history_ms

    def upsert(self, point: Dict[str, Any]) -> bool:
        """Keep ``point`` if it is a newer revision of its window inside the horizon."""
        start = point["start"]
        kept = self.points.get(start)
        if kept is not None and kept["revision"] >= point["revision"]:
            return False
        horizon = self.horizon
        if horizon is not None and start < horizon:
            return False
        self.points[start] = point
        if self.newest_end is None or point["end"] > self.newest_end:
            self.newest_end = point["end"]
            cut = self.horizon
            for old in [s for s in self.points if s < cut]:
                del self.points[old]
        return True

    def changed_since(self, version: int) -> List[Dict[str, Any]]:
        return [p for _, p in sorted(self.points.items()) if p["v"] > version]


@dataclass
class _MinuteCounts:
    """Counts per key in one-minute buckets of wall-clock time."""

    buckets: Dict[Tuple[str, str], Dict[int, int]] = field(default_factory=dict)

    def add(self, key: Tuple[str, str], timestamp_ms: int) -> None:
        minute = timestamp_ms - timestamp_ms % MINUTE_MS
        per_key = self.buckets.setdefault(key, {})
        per_key[minute] = per_key.get(minute, 0) + 1

    def expire(self, oldest_ms: int) -> bool:
        """Drop buckets that end at or before ``oldest_ms``; True if any were dropped."""
        dropped = False
        for key in list(self.buckets):
            per_key = self.buckets[key]
            for minute in [m for m in per_key if m + MINUTE_MS <= oldest_ms]:
                del per_key[minute]
                dropped = True
            if not per_key:
                del self.buckets[key]
        return dropped

    def totals(self) -> List[Dict[str, Any]]:
        """``{"pipeline", "kind", "count"}`` per key, most first."""
        rows = [{"pipeline": k[0], "kind": k[1], "count": sum(b.values())}
                for k, b in self.buckets.items()]
        return sorted(rows, key=lambda r: (-r["count"], r["pipeline"], r["kind"]))


@dataclass
class _SessionTotals:
    """Running sums over the sessions kept (retracted ones count nowhere)."""

    count: int = 0
    pages: int = 0
    duration_ms: int = 0

    def add(self, session: Dict[str, Any], sign: int = 1) -> None:
        if not session["retracted"]:
            self.count += sign
            self.pages += sign * session["pages"]
            self.duration_ms += sign * session["durationMs"]

    def remove(self, session: Dict[str, Any]) -> None:
        self.add(session, -1)

    def as_dict(self) -> Dict[str, int]:
        return {"count": self.count, "pages": self.pages, "durationMs": self.duration_ms}


class DashboardState:
    """What the dashboard shows, built from output records; see the module docstring."""

    def __init__(self, history_ms: int, clock: Callable[[], int] = wall_clock_ms) -> None:
        self.history_ms = history_ms
        self.clock = clock
        self.version = 0
        self.orders = _Series(history_ms)
        self.pageviews = _Series(history_ms)
        self._top: Dict[str, Any] = {}
        self._sessions: Dict[Tuple[str, int], Dict[str, Any]] = {}
        self._session_totals = _SessionTotals()
        self._sessions_newest_end: Optional[int] = None
        self._sessions_horizon = -(2**63)
        self._late = _MinuteCounts()
        self._dead = _MinuteCounts()
        self._fraud: Deque[Dict[str, Any]] = deque(maxlen=FRAUD_ALERTS_KEPT)
        self._lag: Dict[str, Any] = {}
        self._section_v: Dict[str, int] = {name: 0 for name in SECTIONS}

    # -- input -------------------------------------------------------------------

    def _bump(self, *sections: str) -> int:
        self.version += 1
        for name in sections:
            self._section_v[name] = self.version
        return self.version

    def add_order_metrics(self, rec: Dict[str, Any]) -> bool:
        """An `OrderMetrics` record; True if it changed what is shown."""
        point = {"start": rec["windowStart"], "end": rec["windowEnd"],
                 "orders": rec["totalOrders"], "revenue": rec["totalRevenue"],
                 "revision": rec["revision"], "v": self.version + 1}
        if not self.orders.upsert(point):
            return False
        self._bump()
        return True

    def add_pageview_metrics(self, rec: Dict[str, Any]) -> bool:
        """A `PageviewMetrics` record; only tumbling windows are shown."""
        if rec.get("window") != "tumbling":
            return False
        point = {"start": rec["windowStart"], "end": rec["windowEnd"],
                 "views": rec["pageViews"], "users": rec["activeUsers"],
                 "identified": rec["identifiedUsers"], "revision": rec["revision"],
                 "v": self.version + 1}
        if not self.pageviews.upsert(point):
            return False
        newest = max(self.pageviews.points)
        if point["start"] == newest:
            self._top = {"start": point["start"], "end": point["end"],
                         "pages": rec["topPages"], "referrers": rec["topReferrers"]}
            self._bump("top")
        else:
            self._bump()
        return True

    def add_user_session(self, rec: Dict[str, Any]) -> bool:
        """A `UserSession` record: the highest revision per (sessionId, sessionStart);
        a retraction removes the session from the figures."""
        key = (rec["sessionId"], rec["sessionStart"])
        kept = self._sessions.get(key)
        if kept is not None and kept["revision"] >= rec["revision"]:
            return False
        if kept is not None:
            self._session_totals.remove(kept)
        session = {"end": rec["sessionEnd"], "durationMs": rec["durationMs"],
                   "pages": rec["pageViews"], "revision": rec["revision"],
                   "retracted": bool(rec.get("retracted"))}
        self._sessions[key] = session
        self._session_totals.add(session)
        self._expire_sessions(rec["sessionEnd"])
        self._bump("sessions")
        return True

    def _expire_sessions(self, end_ms: int) -> None:
        """Drop sessions that ended more than the history before the newest end (checked
        once per minute of event time, so a record costs O(1) on average)."""
        if self._sessions_newest_end is None or end_ms > self._sessions_newest_end:
            self._sessions_newest_end = end_ms
        horizon = self._sessions_newest_end - self.history_ms
        if horizon < self._sessions_horizon + MINUTE_MS:
            return
        self._sessions_horizon = horizon
        for key in [k for k, s in self._sessions.items() if s["end"] < horizon]:
            self._session_totals.remove(self._sessions.pop(key))

    def add_late_event(self, rec: Dict[str, Any], timestamp_ms: int) -> None:
        view = rec.get("view") or ("partial" if rec.get("kind") == "partial" else "?")
        self._late.add((rec.get("pipeline", "?"), view), timestamp_ms)
        self._bump("late")

    def add_dead_letter(self, rec: Dict[str, Any], timestamp_ms: int) -> None:
        self._dead.add((rec.get("pipeline", "?"), rec.get("reason", "?")), timestamp_ms)
        self._bump("dead")

    def add_fraud_alert(self, rec: Any, timestamp_ms: int) -> None:
        """Any JSON record of the fraud-alerts topic; the newest `FRAUD_ALERTS_KEPT` are kept,
        an ``alertId`` already shown (a re-delivery) is not shown twice."""
        alert_id = rec.get("alertId") if isinstance(rec, dict) else None
        if alert_id is not None and any(
                isinstance(f["alert"], dict) and f["alert"].get("alertId") == alert_id
                for f in self._fraud):
            return
        self._fraud.appendleft({"at": timestamp_ms, "alert": rec})
        self._bump("fraud")

    def set_lag(self, lag: Dict[str, Any]) -> None:
        """Consumer lag by input topic, as measured by `app.consumer_lag`."""
        if lag != self._lag.get("topics"):
            self._lag = {"topics": lag, "at": self.clock()}
            self._bump("lag")

    def expire(self) -> None:
        """Drop counts and alerts older than the history (wall clock)."""
        oldest = self.clock() - self.history_ms
        if self._late.expire(oldest):
            self._bump("late")
        if self._dead.expire(oldest):
            self._bump("dead")
        if self._fraud and self._fraud[-1]["at"] < oldest:
            while self._fraud and self._fraud[-1]["at"] < oldest:
                self._fraud.pop()
            self._bump("fraud")

    # -- output ------------------------------------------------------------------

    def _section(self, name: str) -> Any:
        if name == "top":
            return self._top
        if name == "sessions":
            return self._session_totals.as_dict()
        if name == "late":
            return self._late.totals()
        if name == "dead":
            return self._dead.totals()
        if name == "fraud":
            return list(self._fraud)
        return self._lag

    def snapshot(self) -> Dict[str, Any]:
        """Everything shown: what a page gets when it connects."""
        return self.delta(-1)

    def delta(self, since: int) -> Dict[str, Any]:
        """What changed after version ``since``: window points, the horizons (points
        before them are gone) and each changed section whole."""
        out: Dict[str, Any] = {
            "version": self.version, "since": since, "serverTime": self.clock(),
            "orders": self.orders.changed_since(since), "ordersHorizon": self.orders.horizon,
            "pageviews": self.pageviews.changed_since(since),
            "pageviewsHorizon": self.pageviews.horizon,
        }
        for name in SECTIONS:
            if self._section_v[name] > since:
                out[name] = self._section(name)
        return out
