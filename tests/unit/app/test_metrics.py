"""Counting in the sinks: once per committed offset, nothing for an aborted batch."""

from __future__ import annotations

import pytest
from faust.types import TP

from app import metrics, monitoring
from app.models import BadEvent
from app.partition_log import LogEvent
from app.sinks import Sender, count_emitted, send_dead_letter
from app.transactions import OpenTransactions
from tests.unit.app.fake_producer import FakeProducer
from tables.aggregators import CountAndSum
from tables.engine import Item, WindowEngine
from tables.state import InMemoryStore
from tables.windows import TumblingWindow


def value(name, **labels):
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def in_transaction(producer: FakeProducer, pipeline: str):
    """A transactional sender on ``producer``'s open transaction, and the registry holding it."""
    txns = OpenTransactions()
    txn = txns.join("tid", producer, pipeline)
    return txns, Sender(producer, transactional=True, pipeline=pipeline, txn=txn)


def event(offset: int, raw: bytes = b"{}") -> LogEvent:
    return LogEvent("orders-m", 2, offset, b"k", raw)


async def test_events_are_counted_once_their_batch_commits():
    labels = {"pipeline": "unit-a", "topic": "orders-m", "partition": "2"}
    txns, out = in_transaction(FakeProducer(), "unit-a")
    out.consumed(TP("orders-m", 2), 105, events=5)
    assert value("weir_events_consumed_total", **labels) == 0  # not before the commit
    await txns.commit("tid", "app")
    assert value("weir_events_consumed_total", **labels) == 5
    assert value("weir_transaction_commits_total", pipeline="unit-a") == 1


async def test_an_aborted_batch_counts_no_event_and_one_abort():
    labels = {"pipeline": "unit-b", "topic": "orders-m", "partition": "2"}
    txns, out = in_transaction(FakeProducer(fail_commit=True), "unit-b")
    out.consumed(TP("orders-m", 2), 105, events=5)
    await send_dead_letter(out, "dead", "unit-b", BadEvent("invalid_json", "bad"), event(101), 1024)
    with pytest.raises(RuntimeError):
        await txns.commit("tid", "app")  # a failed commit aborts
    assert value("weir_events_consumed_total", **labels) == 0
    assert value("weir_dead_letters_total", pipeline="unit-b", reason="invalid_json") == 0
    assert value("weir_transaction_aborts_total", pipeline="unit-b") == 1


async def test_dead_letters_are_counted_by_their_short_reason():
    out = Sender(FakeProducer(), transactional=False, pipeline="unit-c")
    for offset, reason in [(1, "invalid_json"), (2, "missing_field"), (3, "invalid_json")]:
        await send_dead_letter(out, "dead", "unit-c", BadEvent(reason, f"details {offset}"),
                               event(offset), 1024)
    await out._flush()
    assert value("weir_dead_letters_total", pipeline="unit-c", reason="invalid_json") == 2
    assert value("weir_dead_letters_total", pipeline="unit-c", reason="missing_field") == 1


async def test_windows_and_revisions_are_counted_per_view():
    out = Sender(FakeProducer(), transactional=False, pipeline="unit-d")
    count_emitted(out, "unit-d", "v", [0, 0, 1, 2])
    await out._flush()
    assert value("weir_windows_emitted_total", pipeline="unit-d", view="v") == 4
    assert value("weir_window_revisions_total", pipeline="unit-d", view="v") == 2


async def test_fraud_alerts_are_counted_by_type_after_the_commit():
    before = value("weir_fraud_alerts_total", type="velocity")
    txns, out = in_transaction(FakeProducer(), "fraud")
    metrics.count_fraud_alert("velocity", out)
    assert value("weir_fraud_alerts_total", type="velocity") == before
    await txns.commit("tid", "app")
    assert value("weir_fraud_alerts_total", type="velocity") == before + 1
    metrics.count_fraud_alert("geo")
    assert value("weir_fraud_alerts_total", type="geo") >= 1


def test_partition_gauges_drop_the_series_of_partitions_that_left():
    gauges = metrics.PartitionGauges(metrics.CONSUMER_LAG)
    gauges.show(("unit-e", "t"), {("0",): 3.0, ("1",): 0.0})
    assert value("weir_consumer_lag_records", pipeline="unit-e", topic="t", partition="0") == 3
    gauges.show(("unit-e", "t"), {("1",): 7.0})
    assert metrics.REGISTRY.get_sample_value(
        "weir_consumer_lag_records", {"pipeline": "unit-e", "topic": "t", "partition": "0"}) is None
    assert value("weir_consumer_lag_records", pipeline="unit-e", topic="t", partition="1") == 7


def test_watermark_and_event_time_lag_follow_the_engine_partitions():
    engine = WindowEngine(TumblingWindow(60_000, 0), 10_000, CountAndSum(), InMemoryStore())
    monitoring.watch_engine("unit-f", "unit-f-view", "unit-f-topic", engine)
    engine.process(3, [Item(0, 1_000_000, 1.0, None), Item(1, 1_005_000, 2.0, None)],
                   next_offset=2)
    monitoring.sample_engines(now_ms=1_065_000)
    assert value("weir_watermark_timestamp_seconds", pipeline="unit-f", view="unit-f-view",
                 partition="3") == 995.0  # (1_005_000 - 10_000) / 1000
    assert value("weir_event_time_lag_seconds", pipeline="unit-f", partition="3") == 60.0
    engine.forget(3)
    monitoring.sample_engines(now_ms=1_066_000)
    assert metrics.REGISTRY.get_sample_value(
        "weir_event_time_lag_seconds", {"pipeline": "unit-f", "partition": "3"}) is None


def test_watermarks_are_shown_only_for_partitions_the_worker_owns():
    engine = WindowEngine(TumblingWindow(60_000, 0), 0, CountAndSum(), InMemoryStore())
    monitoring.watch_engine("unit-g", "unit-g-view", "unit-g-topic", engine)
    for partition in (0, 1):
        engine.process(partition, [Item(0, 1_000_000, 1.0, None)], next_offset=1)
    monitoring.sample_engines(now_ms=1_001_000, owned={"unit-g-topic": {0, 1}})
    assert value("weir_watermark_timestamp_seconds", pipeline="unit-g", view="unit-g-view",
                 partition="1") == 1000.0
    # partition 1 moved to another worker, but its state is still cached here
    monitoring.sample_engines(now_ms=1_002_000, owned={"unit-g-topic": {0}})
    assert metrics.REGISTRY.get_sample_value("weir_watermark_timestamp_seconds", {
        "pipeline": "unit-g", "view": "unit-g-view", "partition": "1"}) is None
    assert value("weir_watermark_timestamp_seconds", pipeline="unit-g", view="unit-g-view",
                 partition="0") == 1000.0


def test_exposition_uses_prometheus_names():
    text = metrics.exposition().decode()
    assert "# TYPE weir_events_consumed_total counter" in text
    assert "# TYPE weir_batch_processing_seconds histogram" in text
    assert "_created" not in text
    assert all(n.startswith("weir_") for n in metrics.METRIC_NAMES)


def test_recovery_remaining_skips_partitions_whose_offset_a_rebalance_left_unknown():
    kept, arrived, unread = (TP("app-view-changelog", p) for p in (0, 1, 2))
    highwaters = {kept: 120, arrived: 80, unread: -1}
    offsets = {kept: 100, arrived: None}  # arrived: nothing persisted, its pass not built yet
    # arrived is counted once its pass knows where it starts; unread has no highwater yet
    assert monitoring.remaining(highwaters, offsets) == 20
