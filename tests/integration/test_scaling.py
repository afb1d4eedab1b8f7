"""Scaling by partitions: three workers share 12 input partitions; outputs stay exact."""

from __future__ import annotations

import asyncio
import collections
import random

import pytest

from tests.integration.kafka_tools import interleaved, produce, read_topic, stop_all_cleanly, wait_for
from tests.integration.prometheus_tools import scrape
from tests.integration.test_metrics import make_workers, start_workers
from tests.integration.test_orders_pipeline import (MALFORMED, SIZE_MS, T0, assert_exact,
                                                    fixed_input, order, oracle_for,
                                                    produce_slowly, read_outputs)

pytestmark = pytest.mark.integration

PARTITIONS, WORKERS = 12, 3


def twelve_partition_input(seed: int = 5, per_partition: int = 250):
    """Orders on every partition with disorder, a few late and malformed ones, then a flush."""
    rnd = random.Random(seed)
    messages = []
    for p in range(PARTITIONS):
        for i in range(per_partition):
            nominal = T0 + i * 700
            roll = rnd.random()
            if roll < 0.02:
                value = rnd.choice(MALFORMED)[0]
            elif roll < 0.05:
                value = order(f"{p}-{i}", nominal - rnd.randrange(70_000, 130_000), 2.5)
            else:
                value = order(f"{p}-{i}", nominal - rnd.randrange(0, 9_000),
                              round(rnd.uniform(1, 500), 2))
            messages.append((p, f"k{p}".encode(), value))
    end = T0 + per_partition * 700 + 10 * SIZE_MS
    messages += [(p, f"k{p}".encode(), order(f"flush-{p}", end, 1.0)) for p in range(PARTITIONS)]
    return messages


def owned_partitions(port: int, topic: str):
    """Partitions of ``topic`` a worker reports owning on its /metrics."""
    samples = scrape(port).get("weir_partition_assigned", [])
    return {int(labels["partition"]) for labels, v in samples
            if labels["topic"] == topic and v == 1}


def consumed_partitions(port: int, topic: str):
    samples = scrape(port).get("weir_events_consumed_total", [])
    return {int(labels["partition"]): v for labels, v in samples if labels["topic"] == topic}


def each_partition_owned_once(workers, topic) -> bool:
    owned = [owned_partitions(w.web_port, topic) for w in workers]
    flat = [p for ps in owned for p in ps]
    return all(owned) and sorted(flat) == list(range(PARTITIONS))


async def test_three_workers_on_12_partitions_own_each_once_and_emit_exact_outputs(
    pipeline_env, tmp_path
):
    env = {**pipeline_env, "WEIR_INPUT_PARTITIONS": str(PARTITIONS),
           "WEIR_METRICS_INTERVAL_MS": "500"}
    servers, topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["WEIR_TOPIC_ORDERS"]
    workers = start_workers(env, tmp_path, WORKERS)
    try:
        def settled() -> bool:
            try:
                return each_partition_owned_once(workers, topic)
            except OSError:  # a web server not up yet
                return False

        wait_for(settled, 180, "every partition owned by exactly one of the three workers")
        owned = [owned_partitions(w.web_port, topic) for w in workers]
        print("partitions per worker:", [sorted(ps) for ps in owned])
        messages = twelve_partition_input()
        await produce(servers, topic, messages)
        inputs = await read_topic(servers, topic, len(messages), settle_s=0)
        expected, dead_expected = oracle_for(inputs)
        assert expected.late and dead_expected and len(expected.merged()) >= 3
        got = await read_outputs(env, expected, len(dead_expected))
        for w in workers:
            w.assert_running()
        assert_exact(got, expected, dead_expected, inputs)

        # no rebalance moved a partition meanwhile, and each worker processed only its own
        assert [owned_partitions(w.web_port, topic) for w in workers] == owned
        per_partition = collections.Counter(r.partition for r in inputs)
        wait_for(lambda: sum(sum(consumed_partitions(w.web_port, topic).values())
                             for w in workers) == len(inputs), 30, "every event counted")
        for w, mine in zip(workers, owned):
            counted = consumed_partitions(w.web_port, topic)
            assert set(counted) == mine
            assert counted == {p: per_partition[p] for p in mine}
        stop_all_cleanly(workers)
    finally:
        for w in workers:
            w.stop()


async def test_a_worker_joining_while_transactions_are_open_leaves_outputs_and_counts_exact(
    pipeline_env, tmp_path
):
    """The first worker's transactions hold batches not committed yet when a second worker
    joins (a long commit interval). They commit before the partitions move, and the
    partitions the first worker keeps go on from them: no batch is folded in twice."""
    env = {**pipeline_env, "WEIR_COMMIT_INTERVAL_MS": "20000",
           "WEIR_OFFSETS_COMMIT_INTERVAL_MS": "20000", "WEIR_METRICS_INTERVAL_MS": "500"}
    servers, topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["WEIR_TOPIC_ORDERS"]
    workers = make_workers(env, tmp_path, 2)
    try:
        workers[0].start()

        def owns(worker, count: int) -> bool:
            try:
                return len(owned_partitions(worker.web_port, topic)) == count
            except OSError:  # its web server is not up yet
                return False

        wait_for(lambda: owns(workers[0], 4), 120, "the first worker owning the 4 partitions")
        messages = interleaved(fixed_input(seed=3, per_partition=300))
        third = len(messages) // 3
        await produce_slowly(servers, topic, messages[:third])
        await asyncio.sleep(2)  # processed (batches wait at most 50 ms), not committed
        # what committed so far is counted; the batches in open transactions are not
        before_join = sum(consumed_partitions(workers[0].web_port, topic).values())
        assert before_join < third, "no batch was left in an open transaction"
        workers[1].start()
        await produce_slowly(servers, topic, messages[third:], pause_s=0.3)
        inputs = await read_topic(servers, topic, len(messages), settle_s=0)
        expected, dead_expected = oracle_for(inputs)
        got = await read_outputs(env, expected, len(dead_expected))
        for w in workers:
            w.assert_running()
        assert_exact(got, expected, dead_expected, inputs)
        assert all(owns(w, 2) for w in workers)  # the join moved two partitions
        # committed while the first worker still owned them: none fenced by the second one
        assert "not committed before its producer stops" not in workers[0].log_text()
        assert "open transactions before the partitions are revoked" in workers[0].log_text()

        per_partition = collections.Counter(r.partition for r in inputs)

        def counted():
            total = collections.Counter()
            for w in workers:
                total.update(consumed_partitions(w.web_port, topic))
            return total

        wait_for(lambda: sum(counted().values()) >= len(inputs), 60, "every event counted")
        assert counted() == per_partition  # each offset once, over both workers
        stop_all_cleanly(workers)
    finally:
        for w in workers:
            if w.proc is not None:
                w.stop()
