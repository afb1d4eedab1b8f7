"""Scaling by partitions: three workers share 12 input partitions; outputs stay exact."""

from __future__ import annotations

import collections
import random

import pytest

from tests.integration.kafka_tools import produce, read_topic, wait_for
from tests.integration.prometheus_tools import scrape
from tests.integration.test_metrics import start_workers
from tests.integration.test_orders_pipeline import (MALFORMED, SIZE_MS, T0, assert_exact, order,
                                                    oracle_for, read_outputs)

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
    finally:
        for w in workers:
            w.stop()
