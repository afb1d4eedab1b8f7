"""The fraud latency oracle of `weir bench`: which transaction made the pipeline emit an
alert, and alert comparison with the batch oracle."""

import orjson

from app.bench_fraud import alert_latencies, cause_append, same_alerts
from app.bench_latency import Record, WatermarkIndex


def test_an_on_arrival_alert_is_caused_by_its_own_transaction():
    index = WatermarkIndex({0: [(1_000, 10), (9_000, 20)]}, delay_ms=5_000)
    assert cause_append({"type": "LARGE_AMOUNT"}, (0, 0, 1_000, 10), index) == 10


def test_an_ordered_alert_is_caused_by_the_transaction_that_moved_the_watermark_past_it():
    # watermark > ts: 6_000 - 5_000 = 1_000 is not past 1_000; 6_001 is
    index = WatermarkIndex({0: [(1_000, 10), (6_000, 20), (6_001, 30)]}, delay_ms=5_000)
    assert cause_append({"type": "HIGH_FREQUENCY"}, (0, 0, 1_000, 10), index) == 30
    assert cause_append({"type": "IMPOSSIBLE_TRAVEL"}, (0, 1, 6_000, 20), index) is None


def tx(tid, ts, append, partition=0):
    return Record(partition, 0, append, None, orjson.dumps({"transactionId": tid,
                                                            "timestamp": ts}))


def alert(kind, tid, append, seen):
    return Record(0, 0, append, None, orjson.dumps({"alertId": f"{kind}:{tid}", "type": kind,
                                                    "transactionId": tid}), seen)


def test_alert_latencies_per_alert_once_by_type():
    inputs = {0: [tx("a", 1_000, 10), tx("b", 1_200, 12), tx("c", 7_000, 50)]}
    alerts = [alert("LARGE_AMOUNT", "b", 15, 18), alert("HIGH_FREQUENCY", "a", 70, 75),
              alert("HIGH_FREQUENCY", "a", 90, 95)]  # a duplicate counts once
    to_alert, steady, to_visible, own, by_type = alert_latencies(inputs, alerts, delay_ms=5_000)
    assert to_alert == [3, 20] and to_visible == [6, 25] and own == [3, 60]
    assert steady == to_alert  # no warm-up left out
    assert by_type == {"LARGE_AMOUNT": [3], "HIGH_FREQUENCY": [20]}


def test_the_steady_state_figures_leave_out_alerts_caused_in_the_warm_up():
    # the run's first input appended at 10; causes at 12 (b) and 50 (c, for a's alert)
    inputs = {0: [tx("a", 1_000, 10), tx("b", 1_200, 12), tx("c", 7_000, 50)]}
    alerts = [alert("LARGE_AMOUNT", "b", 15, 18), alert("HIGH_FREQUENCY", "a", 70, 75)]
    to_alert, steady, *_ = alert_latencies(inputs, alerts, delay_ms=5_000, warmup_ms=40)
    assert to_alert == [3, 20] and steady == [20]  # 12 < 10 + 40 <= 50


def test_alerts_equal_the_oracles_but_for_fields_it_does_not_give_and_float_noise():
    want = {"x": {"alertId": "x", "speedKmh": 1000.0, "count": None}}
    assert same_alerts({"x": {"alertId": "x", "speedKmh": 1000.0000001, "count": None,
                              "detectedAt": 5}}, want)
    assert not same_alerts({"x": {"alertId": "x", "speedKmh": 1001.0, "count": None}}, want)
    assert not same_alerts({}, want)


def test_the_batch_oracle_loads_from_the_source_checkout():
    from app.bench_fraud import fraud_oracle

    oracle = fraud_oracle()
    assert oracle.Thresholds().delay_ms == 5_000 and fraud_oracle() is oracle
