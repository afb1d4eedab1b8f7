"""The broker dies (kill -9) mid-stream and comes back: the worker reconnects, outputs stay exact."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from app import broker
from tests.integration import test_orders_pipeline as orders
from tests.integration import test_pageviews_pipeline as pageviews
from tests.integration.both_pipelines import assert_both_exact, read_both_pipelines, split_flush
from tests.integration.kafka_tools import Worker, produce, read_topic, wait_for

pytestmark = pytest.mark.integration


def halves(messages):
    """The first and second half of each partition's messages (order kept)."""
    counts = {}
    for p, _, _ in messages:
        counts[p] = counts.get(p, 0) + 1
    first, second, seen = [], [], {}
    for m in messages:
        seen[m[0]] = seen.get(m[0], 0) + 1
        (first if seen[m[0]] <= counts[m[0]] // 2 else second).append(m)
    return first, second


def kill_broker(home) -> None:
    pid = broker.running_pid(home)
    assert pid is not None, "the session broker should be running"
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: broker.running_pid(home) is None, 30, "the broker to die")


async def test_broker_killed_and_restarted_mid_stream_leaves_every_output_exact(
        kafka_broker, pipeline_env, tmp_path):
    if kafka_broker.home is None:
        pytest.skip("needs the session's own broker (KAFKA_BOOTSTRAP_SERVERS is set)")
    env = pageviews.pageview_env(pipeline_env)
    servers = env["KAFKA_BOOTSTRAP_SERVERS"]
    order_body, order_flush = split_flush(orders.fixed_input(seed=61), b'"flush-')
    view_body, view_flush = split_flush(pageviews.fixed_input(seed=67), b'"flush-')
    orders_1, orders_2 = halves(order_body)
    views_1, views_2 = halves(view_body)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await asyncio.to_thread(wait_for, lambda: "Worker ready" in worker.log_text(), 90,
                                "the worker to be ready")
        await produce(servers, env["WEIR_TOPIC_ORDERS"], orders_1)
        await produce(servers, env["WEIR_TOPIC_PAGEVIEWS"], views_1)
        first = await read_topic(servers, env["WEIR_TOPIC_ORDER_METRICS"], 1, timeout_s=90,
                                 settle_s=0)
        assert first, "windows are emitted before the broker dies"
        await asyncio.to_thread(kill_broker, kafka_broker.home)
        down_at = time.monotonic()
        await asyncio.sleep(5.0)
        worker.assert_running()
        await asyncio.to_thread(broker.start, kafka_broker.home, kafka_broker.port,
                                kafka_broker.controller_port)
        print(f"broker down for {time.monotonic() - down_at:.1f} s")
        await produce(servers, env["WEIR_TOPIC_ORDERS"], orders_2 + order_flush)
        await produce(servers, env["WEIR_TOPIC_PAGEVIEWS"], views_2 + view_flush)
        outputs = await read_both_pipelines(env, len(order_body) + len(order_flush),
                                            len(view_body) + len(view_flush))
        worker.assert_running()
        worker.stop_cleanly()  # a graceful stop exits with status 0
    finally:
        worker.stop()
        if broker.running_pid(kafka_broker.home) is None:  # leave a broker for the next tests
            broker.start(kafka_broker.home, kafka_broker.port, kafka_broker.controller_port)
    assert_both_exact(outputs)
    # every Kafka client of the worker retried its connection every 100 ms meanwhile: 2,000
    # lines of this in a 23 s outage before `app.log_throttle`, now one per 10 s
    refused = worker.log_text().count("Unable connect to node")
    assert 1 <= refused <= 2 + (time.monotonic() - down_at) / 10, refused
