import gc
import math

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from operator import itemgetter

from agents.fraud_rules import (ID, RECENT_FROM, FraudRules, haversine_km, load_transaction,
                                load_user_state)
from tables.engine import Item
from tables.errors import ConfigError
from tables.ordered import OrderedRelease
from tables.state import InMemoryStore
from tests.fraud_oracle import Thresholds, Tx, expected

RULES = FraudRules()
OSLO, PARIS = (59.91, 10.75), (48.86, 2.35)  # about 1,340 km apart


def tx(i, ts, location="Oslo", coords=None, user="u", amount=10.0):
    lat, lon = coords or (None, None)
    return (f"t{i:03d}", user, amount, location, ts, lat, lon)


def types(alerts, kind):
    return [a["transactionId"] for a in alerts if a["type"] == kind]


def test_five_in_the_window_do_not_alert_six_do():
    five = [tx(i, i * 10_000) for i in range(5)]  # 0..40 s
    assert types(RULES.evaluate(None, five)[1], "HIGH_FREQUENCY") == []
    six = [tx(i, i * 10_000) for i in range(6)]  # 0..50 s
    alerts = RULES.evaluate(None, six)[1]
    assert types(alerts, "HIGH_FREQUENCY") == ["t005"]
    assert [a["count"] for a in alerts] == [6] and alerts[0]["windowMs"] == 60_000


def test_window_is_open_at_its_start_and_closed_at_the_transaction():
    spread = [tx(i, i * 12_000) for i in range(6)]  # 0..60 s: the first is out at 60 s
    assert types(RULES.evaluate(None, spread)[1], "HIGH_FREQUENCY") == []
    spread = [tx(i, i * 11_999) for i in range(6)]  # 0..59.995 s: all six inside
    assert types(RULES.evaluate(None, spread)[1], "HIGH_FREQUENCY") == ["t005"]


def test_ties_after_the_transaction_count_for_it():
    same = [tx(i, 1_000) for i in range(6)]
    alerts = RULES.evaluate(None, same)[1]
    assert types(alerts, "HIGH_FREQUENCY") == ["t000"] and alerts[0]["count"] == 6


def test_one_high_frequency_alert_per_burst():
    burst = [tx(i, i * 1_000) for i in range(20)]  # 0..19 s
    later = [tx(100 + i, 60_000 + 5_000 + i * 1_000) for i in range(10)]  # 65..74 s
    state, alerts = RULES.evaluate(None, burst)
    assert types(alerts, "HIGH_FREQUENCY") == ["t005"]
    _, alerts = RULES.evaluate(state, later)
    # suppressed while ts < 5 s + 60 s; t100 at 65 s has 5 s..65 s: 15 + 1 -> alert again
    assert types(alerts, "HIGH_FREQUENCY") == ["t100"]


def test_suppression_ends_exactly_one_window_after_the_alert():
    burst = [tx(i, i) for i in range(6)] + [tx(10 + i, 60_000 + i) for i in range(6)]
    state, alerts = RULES.evaluate(None, burst)
    # at 60 004 the window (4, 60 004] holds 6, but 60 004 < 5 + 60 000: suppressed;
    # at 60 005 the window (5, 60 005] holds 6 and the suppression is over
    assert types(alerts, "HIGH_FREQUENCY") == ["t005", "t015"]


def test_count_is_reported_up_to_max_plus_one():
    state = None
    for i in range(8):
        state, _ = RULES.evaluate(state, [tx(i, i)])
    assert len(state[RECENT_FROM:]) == 6


@pytest.mark.parametrize("apart_ms, alerts", [(59_999, 1), (60_000, 0)])
def test_different_city_less_than_the_travel_window_apart_alerts(apart_ms, alerts):
    got = RULES.evaluate(None, [tx(0, 0, "Oslo"), tx(1, apart_ms, "Paris")])[1]
    assert len(types(got, "IMPOSSIBLE_TRAVEL")) == alerts
    if alerts:
        a = got[0]
        assert (a["fromLocation"], a["toLocation"], a["previousTransactionId"],
                a["timeApartMs"], a["distanceKm"], a["speedKmh"]) == (
                    "Oslo", "Paris", "t000", 59_999, None, None)


def test_same_city_never_alerts():
    assert RULES.evaluate(None, [tx(0, 0, "Oslo"), tx(1, 1, "Oslo")])[1] == []


def test_missing_coordinates_on_either_side_fall_back_to_locations():
    got = RULES.evaluate(None, [tx(0, 0, "Oslo", OSLO), tx(1, 3_600_000 * 10, "Paris")])[1]
    assert got == []  # 10 h apart, no coordinates on one side: the location rule, 60 s
    got = RULES.evaluate(None, [tx(0, 0, "Oslo", OSLO), tx(1, 30_000, "Paris")])[1]
    assert types(got, "IMPOSSIBLE_TRAVEL") == ["t001"] and got[0]["distanceKm"] is None


def test_speed_decides_when_both_have_coordinates():
    km = haversine_km(*OSLO, *PARIS)
    just_fast = int(km / 900 * 3_600_000) - 1_000
    got = RULES.evaluate(None, [tx(0, 0, "Oslo", OSLO), tx(1, just_fast, "Paris", PARIS)])[1]
    assert types(got, "IMPOSSIBLE_TRAVEL") == ["t001"]
    assert got[0]["speedKmh"] > 900 and got[0]["distanceKm"] == pytest.approx(1_340, rel=0.01)
    slow = int(km / 900 * 3_600_000) + 1_000
    assert RULES.evaluate(None, [tx(0, 0, "Oslo", OSLO), tx(1, slow, "Paris", PARIS)])[1] == []
    # different names, same point: distance 0 never alerts, even 1 ms apart
    assert RULES.evaluate(None, [tx(0, 0, "A", OSLO), tx(1, 1, "B", OSLO)])[1] == []


def test_zero_time_apart_with_distance_is_infinite_speed():
    got = RULES.evaluate(None, [tx(0, 5, "Oslo", OSLO), tx(1, 5, "Paris", PARIS)])[1]
    assert types(got, "IMPOSSIBLE_TRAVEL") == ["t001"] and got[0]["speedKmh"] is None
    assert got[0]["timeApartMs"] == 0 and got[0]["distanceKm"] > 1_000


def test_large_amount_is_strictly_above_the_threshold():
    assert RULES.large_amount_alert(tx(0, 0, amount=10_000.0)) is None
    alert = RULES.large_amount_alert(tx(1, 0, amount=10_000.01))
    assert alert["alertId"] == "LARGE_AMOUNT:t001" and alert["threshold"] == 10_000.0


@pytest.mark.parametrize("field, value", [("frequency_max", 0), ("frequency_window_ms", -1),
                                          ("max_speed_kmh", 0.0), ("large_amount", math.nan)])
def test_bad_thresholds_fail_naming_the_parameter(field, value):
    with pytest.raises(ConfigError, match=field):
        FraudRules(**{field: value})


CITIES = [("Oslo", OSLO), ("Paris", PARIS), ("Rome", (41.9, 12.5)), ("Nowhere", None)]


@st.composite
def streams(draw):
    """One partition's transactions in arrival order: disorder, duplicates, late ones, ties."""
    n = draw(st.integers(1, 60))
    out = []
    for i in range(n):
        ts = i * 2_000 + draw(st.integers(-12, 2)) * 500 + draw(st.sampled_from([0, 0, 1]))
        city, coords = draw(st.sampled_from(CITIES))
        dup = out and draw(st.integers(0, 9)) == 0
        if dup:
            out.append(draw(st.sampled_from(out)))
            continue
        out.append(Tx(0, 0, f"t{i:03d}", draw(st.sampled_from(["a", "b"])),
                      draw(st.sampled_from([5.0, 10_000.0, 20_000.0])), city,
                      ts, *(coords or (None, None))))
    return [Tx(0, off, x.id, x.user, x.amount, x.location, x.ts, x.lat, x.lon)
            for off, x in enumerate(out)]


KINDS = {"LARGE_AMOUNT": 0, "HIGH_FREQUENCY": 0, "IMPOSSIBLE_TRAVEL": 0}


@settings(max_examples=300, deadline=None)
@given(streams(), st.integers(1, 40))
def test_ordered_rules_in_batches_equal_the_batch_oracle(txs, batch_size):
    """Dedup, lateness, ordered release and the rules, batch by batch, as the agent does."""
    buf = OrderedRelease(5_000, InMemoryStore(), tie=itemgetter(ID))
    seen, users, got, late = set(), {}, {}, set()
    for start in range(0, len(txs), batch_size):
        items = []
        for x in txs[start:start + batch_size]:
            if x.id in seen:
                continue
            seen.add(x.id)
            value = (x.id, x.user, x.amount, x.location, x.ts, x.lat, x.lon)
            large = RULES.large_amount_alert(value)
            if large:
                got[large["alertId"]] = large
            items.append(Item(x.offset, x.ts, value, x, key=x.user))
        result = buf.process(0, items)
        late |= {(0, l.item.offset, l.watermark_ms) for l in result.late}
        by_user = {}
        for r in result.released:
            by_user.setdefault(r.key, []).append(r.value)
        for user, mine in by_user.items():
            users[user], alerts = RULES.evaluate(users.get(user), mine)
            got.update({a["alertId"]: a for a in alerts})
    want, want_late = expected(txs, Thresholds())
    for kind in KINDS:
        KINDS[kind] += any(a.startswith(kind) for a in want)
    assert late == want_late
    assert set(got) == set(want)
    for key, alert in got.items():
        w = want[key]
        for field, value in alert.items():
            if isinstance(value, float):
                assert value == pytest.approx(w[field], rel=1e-9), (key, field)
            else:
                assert value == w[field], (key, field)


def test_the_generated_streams_exercise_every_rule():
    test_ordered_rules_in_batches_equal_the_batch_oracle()
    print(KINDS)
    assert all(n > 20 for n in KINDS.values()), KINDS


def test_a_user_state_is_left_alone_by_the_garbage_collector_once_seen():
    state = None
    for i in range(8):  # with a burst alert and a previous transaction with coordinates
        state, _ = RULES.evaluate(state, [tx(i, i, "Oslo", OSLO)])
    assert {type(field) for field in state} <= {int, float, str, type(None)}  # one flat tuple
    entry = (state, 7)  # as `tables.ttl.TtlState` keeps it
    gc.collect()
    gc.collect()  # the outer tuples go once their members are untracked
    assert not gc.is_tracked(state) and not gc.is_tracked(entry)


def test_a_stored_user_state_loads_as_the_state_it_was():
    state, _ = RULES.evaluate(None, [tx(0, 0, "Oslo", OSLO), tx(1, 1_000, "Paris", PARIS)])
    assert load_user_state(orjson.loads(orjson.dumps(state))) == state
    later = [tx(2, 2_000, "Rome")]
    assert RULES.evaluate(load_user_state(orjson.loads(orjson.dumps(state))), later) == \
        RULES.evaluate(state, later)


def test_a_user_state_stored_by_earlier_versions_still_loads():
    prev = {"id": "t001", "user": "u", "amount": 10.0, "location": "Paris", "ts": 1_000,
            "lat": PARIS[0], "lon": PARIS[1]}
    as_dict = {"recent": [0, 1_000], "prev": prev, "hfAlertTs": None}
    as_lists = [[0, 1_000], ["t001", "Paris", 1_000, PARIS[0], PARIS[1]], None]
    state, _ = RULES.evaluate(None, [tx(0, 0, "Oslo", OSLO), tx(1, 1_000, "Paris", PARIS)])
    assert load_user_state(as_dict) == state == load_user_state(as_lists)
    empty = [[], None, None]  # no transaction yet: no previous one
    assert load_user_state(empty) == (None,) * 6 == RULES.evaluate(None, [])[0]


def test_a_buffered_transaction_loads_as_the_tuple_it_was_and_from_a_dict_of_earlier_versions():
    value = tx(3, 1_000, "Paris", PARIS, amount=12.5)
    assert load_transaction(orjson.loads(orjson.dumps(value))) == value
    stored = {"id": "t003", "user": "u", "amount": 12.5, "location": "Paris", "ts": 1_000,
              "lat": PARIS[0], "lon": PARIS[1]}
    assert load_transaction(stored) == value


def test_a_transaction_is_left_alone_by_the_garbage_collector_once_seen():
    value = tx(1, 5, "Oslo", OSLO)
    gc.collect()
    assert not gc.is_tracked(value)
