"""Outputs commit in the transaction of the input that caused them (faust-streaming #177).

A worker dies right before committing the first batch that emitted order
windows; its restart emits them again. Read with ``read_committed``, each
window must appear once. The same crash with the outputs sent outside the
transaction (what faust-streaming does for topics the app does not consume)
must show the duplicates: that is what the first test would catch.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

import pytest

from tests.integration import test_orders_pipeline as orders
from tests.integration.faulty_worker import CRASH_EXIT_CODE
from tests.integration.kafka_tools import Worker, produce, read_topic, wait_for

pytestmark = pytest.mark.integration

FAULTY_WEIR = [sys.executable, "-m", "tests.integration.faulty_worker"]


async def crash_before_first_window_commit_then_restart(env, tmp_path):
    """Inputs and the order-metrics records (read_committed) after one injected crash."""
    servers, topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["WEIR_TOPIC_ORDERS"]
    messages = orders.fixed_input(seed=11, per_partition=120)
    env = {**env, "WEIR_TEST_CRASH_BEFORE_COMMIT_TO": env["WEIR_TOPIC_ORDER_METRICS"],
           "WEIR_CONSUMER_SESSION_TIMEOUT_MS": "6000",  # the dead member leaves soon
           "WEIR_TEST_CRASH_MARKER": str(tmp_path / "crashed")}
    first = Worker(env, tmp_path / "worker-1.log", FAULTY_WEIR).start()
    try:
        await produce(servers, topic, messages)
        await asyncio.to_thread(wait_for, lambda: first.proc.poll() is not None, 120,
                                "the injected crash")
    finally:
        if first.proc.poll() is None:  # no crash came: do not leave the worker running
            first.kill()
    assert first.proc.returncode == CRASH_EXIT_CODE, first.log_text()[-3000:]
    second = Worker(env, tmp_path / "worker-2.log", FAULTY_WEIR).start()
    try:
        inputs = await read_topic(servers, topic, len(messages), settle_s=0)
        expected, _ = orders.oracle_for(inputs)
        # the restarted worker emits every window the crashed batch had emitted (or more)
        await asyncio.to_thread(
            wait_for, lambda: second.log_text().count("orders window [") >= len(expected.merged()),
            120, "the restarted worker to emit the windows again")
        metrics = await read_topic(
            servers, env["WEIR_TOPIC_ORDER_METRICS"], len(expected.merged()), timeout_s=120,
            settle_s=3.0, until=lambda recs: {json.loads(r.value)["windowStart"] for r in recs}
            >= set(expected.merged()))
        second.assert_running()
    finally:
        second.stop()
    return expected, metrics


def emissions(metrics):
    return Counter((json.loads(r.value)["windowStart"], json.loads(r.value)["revision"])
                   for r in metrics)


async def test_windows_of_a_batch_that_crashed_before_its_commit_are_emitted_once(
        pipeline_env, tmp_path):
    expected, metrics = await crash_before_first_window_commit_then_restart(pipeline_env, tmp_path)
    counts = emissions(metrics)
    assert counts and max(counts.values()) == 1, counts
    assert orders.summarize(metrics, [], [])[0] == orders.expected_rows(expected)[0]


async def test_the_same_crash_duplicates_windows_when_outputs_leave_outside_the_transaction(
        pipeline_env, tmp_path):
    env = {**pipeline_env, "WEIR_TEST_SEND_OUTSIDE_TRANSACTION": "1"}
    _, metrics = await crash_before_first_window_commit_then_restart(env, tmp_path)
    assert max(emissions(metrics).values()) == 2  # the crashed batch's windows, then again
