"""Hostile input on both pipelines: every bad payload lands in dead-letters with its reason,
the watermark and every other output stay exactly the oracle's, and the worker keeps going."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter

import pytest

from tests.integration import test_orders_pipeline as orders
from tests.integration import test_pageviews_pipeline as pageviews
from tests.integration.both_pipelines import assert_both_exact, read_both_pipelines, split_flush
from tests.integration.hostile import HOSTILE_ORDERS, HOSTILE_PAGEVIEWS
from tests.integration.kafka_tools import Worker, produce, wait_for
from tests.integration.prometheus_tools import scrape

pytestmark = pytest.mark.integration


def with_hostile(body, hostile, rnd):
    """``body`` with each hostile payload at a random place of a random partition (null key,
    but for the null value: a tombstone needs one), and valid messages re-delivered with a
    null key (duplicates: they count once)."""
    messages = list(body)
    for value, _ in hostile:
        messages.insert(rnd.randrange(len(messages) // 5, len(messages)),
                        (rnd.randrange(orders.PARTITIONS), value is None and b"t" or None, value))
    for p, _, value in rnd.sample(body, 3):
        if value not in orders.KNOWN_BAD and value not in pageviews.KNOWN_BAD:
            messages.append((p, None, value))
    return messages


async def test_every_hostile_payload_is_a_dead_letter_with_its_reason_and_changes_no_output(
        pipeline_env, tmp_path):
    rnd = random.Random(3)
    env = pageviews.pageview_env(pipeline_env)
    servers = env["KAFKA_BOOTSTRAP_SERVERS"]
    order_body, order_flush = split_flush(orders.fixed_input(seed=51, per_partition=120),
                                          b'"flush-')
    view_body, view_flush = split_flush(pageviews.fixed_input(seed=53, per_partition=120),
                                        b'"flush-')
    order_input = with_hostile(order_body, HOSTILE_ORDERS, rnd) + order_flush
    view_input = with_hostile(view_body, HOSTILE_PAGEVIEWS, rnd) + view_flush
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await asyncio.to_thread(wait_for, lambda: "Worker ready" in worker.log_text(), 90,
                                "the worker to be ready")
        await produce(servers, env["WEIR_TOPIC_ORDERS"], order_input)
        await produce(servers, env["WEIR_TOPIC_PAGEVIEWS"], view_input)
        outputs = await read_both_pipelines(env, len(order_input), len(view_input))
        worker.assert_running()
        exported = Counter({(labels["pipeline"], labels["reason"]): int(value) for labels, value
                            in scrape(worker.web_port).get("weir_dead_letters_total", [])})
        worker.stop_cleanly()  # a graceful stop exits with status 0
    finally:
        worker.stop()
    assert_both_exact(outputs)  # windows, sessions, late events and dead letters
    dead = [json.loads(r.value) for r in outputs[5][3]]
    reasons = {(d["pipeline"], d["reason"]) for d in dead}
    assert {("orders", r) for _, r in HOSTILE_ORDERS} <= reasons
    assert {("pageviews", r) for _, r in HOSTILE_PAGEVIEWS} <= reasons
    assert exported == Counter((d["pipeline"], d["reason"]) for d in dead)  # /metrics counts
    big = [d for d in dead if d["reason"] == "too_large"]
    assert len(big) == 2 and all(d["rawTruncated"] and d["rawBytes"] > 1_000_000 for d in big)
