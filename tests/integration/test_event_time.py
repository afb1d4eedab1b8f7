"""Time without data: idle partitions and quiet streams, through the real broker."""

from __future__ import annotations

import json

import pytest

from tests.integration.kafka_tools import Worker, produce, read_topic
from tests.oracle import InputEvent, expected_outputs

pytestmark = pytest.mark.integration

T0 = 1_699_999_980_000


def order(i: str, ts: int, amount: float) -> bytes:
    return json.dumps({"orderId": i, "userId": "u", "amount": amount,
                       "timestamp": ts, "productId": "p"}).encode()


async def test_idle_partition_stops_holding_back_merged_windows(pipeline_env, tmp_path):
    env = {**pipeline_env, "WEIR_IDLE_TIMEOUT_MS": "3000", "WEIR_IDLE_ADVANCE": "false"}
    # partitions 0..2 get orders over five minutes; partition 3 gets nothing at all
    messages = [(p, b"k", order(f"{p}-{i}", T0 + i * 1_000, 1.0 + p))
                for i in range(300) for p in range(3)]
    servers = env["KAFKA_BOOTSTRAP_SERVERS"]
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await produce(servers, env["WEIR_TOPIC_ORDERS"], messages)
        inputs = await read_topic(servers, env["WEIR_TOPIC_ORDERS"], len(messages), settle_s=0)
        events = [InputEvent(r.partition, r.offset, json.loads(r.value)["timestamp"],
                             json.loads(r.value)["amount"]) for r in inputs]
        want = expected_outputs(events, 60_000, 10_000).merged()
        assert len(want) == 4  # [T0, T0+4 min) closed by the partitions that have data
        records = await read_topic(servers, env["WEIR_TOPIC_ORDER_METRICS"], len(want),
                                   timeout_s=60, settle_s=1.0)
        worker.assert_running()
        worker.stop_cleanly()  # a graceful stop exits with status 0
    finally:
        worker.stop()
    got = {m["windowStart"]: (m["totalOrders"], round(m["totalRevenue"], 6))
           for m in (json.loads(r.value) for r in records)}
    assert got == {s: (n, round(t, 6)) for s, (n, t) in want.items()}
    assert len(records) == len(want)


async def test_quiet_stream_closes_its_last_window_by_the_wall_clock(pipeline_env, tmp_path):
    env = {**pipeline_env, "WEIR_IDLE_TIMEOUT_MS": "2000", "WEIR_IDLE_ADVANCE": "true",
           "WEIR_ORDER_WINDOW_SIZE_MS": "5000", "WEIR_MAX_OUT_OF_ORDERNESS_MS": "1000"}
    start = T0  # a multiple of 5 s; every order falls in [start, start + 5 s)
    messages = [(p, b"k", order(f"{p}-{i}", start + i * 400, 2.5)) for i in range(10) for p in range(4)]
    servers = env["KAFKA_BOOTSTRAP_SERVERS"]
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await produce(servers, env["WEIR_TOPIC_ORDERS"], messages)
        # no further data: only the wall clock can close [start, start + 5 s)
        records = await read_topic(servers, env["WEIR_TOPIC_ORDER_METRICS"], 1,
                                   timeout_s=60, settle_s=2.0)
        worker.assert_running()
        worker.stop_cleanly()  # a graceful stop exits with status 0
    finally:
        worker.stop()
    [metrics] = [json.loads(r.value) for r in records]
    assert (metrics["windowStart"], metrics["windowEnd"]) == (start, start + 5_000)
    assert (metrics["totalOrders"], metrics["totalRevenue"], metrics["revision"]) == (40, 100.0, 0)
