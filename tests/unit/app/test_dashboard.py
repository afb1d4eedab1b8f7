"""The dashboard's feed state: revisions replace, history is bounded in time, deltas are exact."""

import os
import subprocess
import sys

import orjson
import pytest
from aiokafka import TopicPartition

from app.consumer_lag import lag_by_topic
from app.dashboard import FRAUD_ALERTS_KEPT, DashboardState
from app.dashboard_reader import apply_record
from app.settings import Settings
from tables.errors import ConfigError

MIN = 60_000
HOUR = 60 * MIN
T0 = 1_700_000_040_000  # a minute boundary


class FakeClock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def order_window(start, orders, revenue, revision=0):
    return {"windowStart": start, "windowEnd": start + MIN, "totalOrders": orders,
            "totalRevenue": revenue, "avgOrderValue": revenue / orders, "revision": revision}


def pageview_window(start, views, users, revision=0, window="tumbling", pages=(("/", 1),)):
    return {"window": window, "windowStart": start, "windowEnd": start + MIN, "pageViews": views,
            "activeUsers": users, "identifiedUsers": 0, "topPages": [list(p) for p in pages],
            "topReferrers": [], "revision": revision}


def totals(state):
    snap = state.snapshot()
    return {p["start"]: (p["orders"], p["revenue"]) for p in snap["orders"]}


def test_a_higher_revision_replaces_the_window_and_is_never_added():
    state = DashboardState(HOUR)
    state.add_order_metrics(order_window(T0, 3, 30.0))
    state.add_order_metrics(order_window(T0, 5, 50.0, revision=1))
    assert totals(state) == {T0: (5, 50.0)}


def test_a_repeated_or_older_revision_changes_nothing():
    state = DashboardState(HOUR)
    assert state.add_order_metrics(order_window(T0, 5, 50.0, revision=1))
    version = state.version
    assert not state.add_order_metrics(order_window(T0, 5, 50.0, revision=1))
    assert not state.add_order_metrics(order_window(T0, 3, 30.0, revision=0))
    assert totals(state) == {T0: (5, 50.0)} and state.version == version


def test_windows_before_the_hour_that_ends_at_the_newest_window_are_dropped():
    state = DashboardState(HOUR)
    for i in range(70):
        state.add_order_metrics(order_window(T0 + i * MIN, 1, 1.0))
    newest_end = T0 + 70 * MIN
    starts = sorted(totals(state))
    assert starts[0] == newest_end - HOUR and starts[-1] == T0 + 69 * MIN and len(starts) == 60
    assert state.snapshot()["ordersHorizon"] == newest_end - HOUR


def test_a_window_older_than_the_history_is_not_taken():
    state = DashboardState(HOUR)
    state.add_order_metrics(order_window(T0 + 2 * HOUR, 1, 1.0))
    assert not state.add_order_metrics(order_window(T0, 9, 9.0))
    assert list(totals(state)) == [T0 + 2 * HOUR]


def test_pageview_series_holds_tumbling_windows_and_top_lists_of_the_newest():
    state = DashboardState(HOUR)
    state.add_pageview_metrics(pageview_window(T0 + MIN, 7, 3, pages=[("/new", 7)]))
    state.add_pageview_metrics(pageview_window(T0, 4, 2, pages=[("/old", 4)]))  # older window
    state.add_pageview_metrics(pageview_window(T0, 100, 50, window="hopping"))
    snap = state.snapshot()
    assert [(p["start"], p["views"], p["users"]) for p in snap["pageviews"]] == [
        (T0, 4, 2), (T0 + MIN, 7, 3)]
    assert snap["top"]["pages"] == [["/new", 7]] and snap["top"]["start"] == T0 + MIN


def test_a_delta_holds_what_changed_since_the_version_given():
    state = DashboardState(HOUR)
    state.add_order_metrics(order_window(T0, 1, 1.0))
    seen = state.version
    state.add_order_metrics(order_window(T0 + MIN, 2, 2.0))
    state.add_order_metrics(order_window(T0, 3, 3.0, revision=1))
    delta = state.delta(seen)
    assert [(p["start"], p["orders"]) for p in delta["orders"]] == [(T0, 3), (T0 + MIN, 2)]
    assert "late" not in delta and "fraud" not in delta
    assert state.delta(state.version)["orders"] == []


def test_sessions_keep_the_highest_revision_and_retractions_remove_them():
    state = DashboardState(HOUR)

    def session(sid, start, pages, revision=0, retracted=False):
        return {"sessionId": sid, "sessionStart": start, "sessionEnd": start + 1000,
                "durationMs": 1000, "pageViews": pages, "revision": revision,
                "retracted": retracted}

    state.add_user_session(session("a", T0, 2))
    state.add_user_session(session("a", T0, 3, revision=1))
    state.add_user_session(session("a", T0, 2))  # a stale duplicate
    state.add_user_session(session("b", T0, 4))
    state.add_user_session(session("b", T0, 4, revision=1, retracted=True))
    assert state.snapshot()["sessions"] == {"count": 1, "pages": 3, "durationMs": 1000}


def test_late_events_and_dead_letters_are_counted_for_the_last_hour_of_wall_clock():
    clock = FakeClock(T0)
    state = DashboardState(HOUR, clock=clock)
    state.add_late_event({"pipeline": "orders", "view": "orders-totals"}, T0 - 10)
    state.add_late_event({"pipeline": "orders", "view": "orders-totals"}, T0 + 5 * MIN)
    state.add_dead_letter({"pipeline": "pageviews", "reason": "invalid_json"}, T0)
    snap = state.snapshot()
    assert snap["late"] == [{"pipeline": "orders", "kind": "orders-totals", "count": 2}]
    assert snap["dead"] == [{"pipeline": "pageviews", "kind": "invalid_json", "count": 1}]
    clock.now_ms = T0 + HOUR + MIN  # the minute before T0 and the one at T0 have left the hour
    state.expire()
    snap = state.snapshot()
    assert snap["late"] == [{"pipeline": "orders", "kind": "orders-totals", "count": 1}]
    assert snap["dead"] == []


def test_only_the_latest_fraud_alerts_are_kept_newest_first():
    clock = FakeClock(T0)
    state = DashboardState(HOUR, clock=clock)
    for i in range(FRAUD_ALERTS_KEPT + 5):
        state.add_fraud_alert({"rule": "velocity", "n": i}, T0 + i)
    alerts = state.snapshot()["fraud"]
    assert [a["alert"]["n"] for a in alerts] == list(range(FRAUD_ALERTS_KEPT + 4, 4, -1))
    clock.now_ms = T0 + HOUR + FRAUD_ALERTS_KEPT
    state.expire()
    assert [a["alert"]["n"] for a in state.snapshot()["fraud"]] == list(
        range(FRAUD_ALERTS_KEPT + 4, FRAUD_ALERTS_KEPT - 1, -1))


def test_records_that_are_not_weir_json_are_skipped():
    state = DashboardState(HOUR)
    apply_record(state, "orders", b"not json", T0)
    apply_record(state, "orders", None, T0)
    apply_record(state, "orders", b'{"windowStart": 1}', T0)
    apply_record(state, "orders", orjson.dumps(order_window(T0, 2, 4.0)), T0)
    assert totals(state) == {T0: (2, 4.0)}


def test_lag_counts_from_the_committed_offset_or_the_first_offset_without_one():
    a0, a1, b0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)
    lag = lag_by_topic(ends={a0: 100, a1: 50, b0: 10}, starts={a0: 0, a1: 20, b0: 0},
                       committed={a0: 100, b0: 4})
    assert lag == {"a": {"lag": 30, "partitions": 2, "behind": 1},
                   "b": {"lag": 6, "partitions": 1, "behind": 1}}


def test_sessions_that_ended_more_than_the_history_before_the_newest_are_dropped():
    state = DashboardState(HOUR)
    for i in range(130):  # one session a minute for 130 minutes
        state.add_user_session({"sessionId": f"s{i}", "sessionStart": T0 + i * MIN,
                                "sessionEnd": T0 + i * MIN, "durationMs": 0, "pageViews": 1,
                                "revision": 0, "retracted": False})
    # ends from newest - 1 h (minute 69) to the newest (minute 129), both kept
    assert state.snapshot()["sessions"] == {"count": 61, "pages": 61, "durationMs": 0}


@pytest.mark.parametrize("env, value", [
    ("WEIR_DASHBOARD_ENABLED", "yes"), ("WEIR_DASHBOARD_HISTORY_MS", "59999"),
    ("WEIR_DASHBOARD_PUSH_INTERVAL_MS", "0"), ("WEIR_DASHBOARD_LAG_INTERVAL_MS", "abc")])
def test_a_bad_dashboard_setting_fails_naming_it(env, value):
    with pytest.raises(ConfigError, match=env):
        Settings.from_env({env: value})


@pytest.mark.parametrize("enabled", ["true", "false"])
def test_the_dashboard_routes_exist_only_when_enabled(enabled):
    probe = ("from app.faust_app import app; "
             "print(sorted(p for p in app.web.views if p.startswith('/dashboard')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "WEIR_DASHBOARD_ENABLED": enabled})
    assert out.returncode == 0, out.stderr
    routes = ["/dashboard", "/dashboard/events", "/dashboard/snapshot"]
    assert out.stdout.strip() == str(routes if enabled == "true" else [])


def test_a_fraud_alert_delivered_twice_is_shown_once():
    state = DashboardState(HOUR)
    alert = {"alertId": "LARGE_AMOUNT:t1", "type": "LARGE_AMOUNT", "userId": "u1"}
    state.add_fraud_alert(alert, T0)
    state.add_fraud_alert(dict(alert), T0 + 1)
    state.add_fraud_alert({**alert, "alertId": "LARGE_AMOUNT:t2"}, T0 + 2)
    assert [a["alert"]["alertId"] for a in state.snapshot()["fraud"]] == [
        "LARGE_AMOUNT:t2", "LARGE_AMOUNT:t1"]
