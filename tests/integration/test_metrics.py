"""Two real workers scraped by a real Prometheus: the counters add up to what was produced."""

from __future__ import annotations

import collections

import pytest

from tests.integration.kafka_tools import (Worker, free_port, interleaved, read_topic,
                                          stop_all_cleanly, wait_for)
from tests.integration.prometheus_tools import Prometheus, http_status, scrape
from tests.integration.test_orders_pipeline import fixed_input, oracle_for, produce_slowly
from tests.unit.test_deployment import dashboard_queries

pytestmark = pytest.mark.integration


def make_workers(env, tmp_path, count, extra=None):
    """Workers not started yet, each with its own data dir and web port."""
    workers = []
    for i in range(count):
        worker_env = {**env, "WEIR_DATA_DIR": str(tmp_path / f"data-{i}"),
                      **((extra or {}).get(i, {}))}
        worker = Worker(worker_env, tmp_path / f"worker-{i}.log")
        worker.web_port = free_port()
        workers.append(worker)
    return workers


def start_workers(env, tmp_path, count, extra=None):
    return [w.start() for w in make_workers(env, tmp_path, count, extra)]


def owners(prom: Prometheus, topic: str):
    """instance -> partitions of ``topic`` it owns, as Prometheus last scraped them."""
    result = prom.query(f'weir_partition_assigned{{topic="{topic}"}} == 1')
    by_instance = collections.defaultdict(set)
    for labels, _ in result:
        by_instance[labels["instance"]].add(int(labels["partition"]))
    return dict(by_instance)


def shared_by(prom: Prometheus, topic: str, workers: int, partitions: int) -> bool:
    owned = owners(prom, topic)
    return (len(owned) == workers and all(owned.values())
            and sorted(p for ps in owned.values() for p in ps) == list(range(partitions)))


async def test_prometheus_sums_of_two_workers_equal_what_was_produced(pipeline_env, tmp_path):
    env = {**pipeline_env, "WEIR_METRICS_INTERVAL_MS": "500"}
    servers, topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["WEIR_TOPIC_ORDERS"]
    # the second worker serves Faust's /table/ routes: the setting, not luck, hides them
    workers = make_workers(env, tmp_path, 2, {1: {"WEIR_WEB_TABLES_ENABLED": "true"}})
    prom = Prometheus([f"127.0.0.1:{w.web_port}" for w in workers], tmp_path).start()
    try:
        workers[0].start()
        wait_for(lambda: prom.targets_up() == 1 and shared_by(prom, topic, 1, 4), 120,
                 "the first worker scraped, owning the 4 partitions")
        messages = interleaved(fixed_input(seed=3, per_partition=300))
        third = len(messages) // 3
        await produce_slowly(servers, topic, messages[:third])
        # the second worker joins mid-stream: partitions move, batches are re-read
        workers[1].start()
        await produce_slowly(servers, topic, messages[third:], pause_s=0.5)
        inputs = await read_topic(servers, topic, len(messages), settle_s=0)
        expected, dead_expected = oracle_for(inputs)
        assert expected.late and dead_expected  # the input covers each counter

        consumed = "sum(weir_events_consumed_total)"
        wait_for(lambda: prom.scalar(consumed) == len(messages), 120,
                 f"{consumed} == {len(messages)}")
        wait_for(lambda: prom.scalar("sum(weir_consumer_lag_records)") == 0, 60,
                 "consumer lag 0 on every partition")
        wait_for(lambda: prom.scalar("sum(weir_windows_emitted_total)") == len(expected.merged()),
                 60, "every window emitted")
        wait_for(lambda: prom.targets_up() == 2 and shared_by(prom, topic, 2, 4), 60,
                 "both workers sharing the 4 partitions")
        assert prom.scalar("sum(weir_rebalances_total)") >= 3  # the join moved partitions
        per_worker = prom.query("sum by (instance) (weir_events_consumed_total)")
        assert len(per_worker) == 2 and all(v > 0 for _, v in per_worker), per_worker
        for w in workers:
            w.assert_running()

        assert prom.scalar(consumed) == len(messages)  # still exact: nothing counted twice
        per_partition = {int(labels["partition"]): v for labels, v in prom.query(
            f'sum by (partition) (weir_events_consumed_total{{topic="{topic}"}})')}
        assert per_partition == dict(collections.Counter(r.partition for r in inputs))
        assert prom.scalar("sum(weir_late_events_total)") == len(expected.late)
        dead = {labels["reason"]: v for labels, v in prom.query(
            "sum by (reason) (weir_dead_letters_total)")}
        assert dead == dict(collections.Counter(reason for _, _, reason in dead_expected))
        assert prom.scalar("sum(weir_window_revisions_total)") in (None, 0.0)
        assert prom.scalar("sum(weir_transaction_aborts_total)") in (None, 0.0)
        assert prom.scalar("sum(weir_transaction_commits_total)") > 0
        assert prom.scalar("sum(weir_batch_processing_seconds_count)") > 0
        marks = prom.query('weir_watermark_timestamp_seconds{view="orders-totals"}')
        assert len(marks) == 4 and all(v > 1_699_999_000 for _, v in marks)
        assert len(prom.query("weir_event_time_lag_seconds")) == 4

        assert http_status(f"http://127.0.0.1:{workers[0].web_port}/") == 200  # the HEALTHCHECK
        assert http_status(f"http://127.0.0.1:{workers[0].web_port}/table/") == 404
        assert http_status(f"http://127.0.0.1:{workers[1].web_port}/table/") == 200
        own = scrape(workers[0].web_port)
        assert own["weir_table_keys"] and own["weir_state_disk_bytes"][0][1] > 0
        assert own["weir_changelog_recovery_in_progress"][0][1] == 0

        # every query of the Grafana dashboard is valid PromQL; those on data flowing here answer
        queries = dashboard_queries()
        for title, exprs in queries.items():
            for expr in exprs:
                prom.query(expr)  # raises unless Prometheus accepts it
        for title in ("Throughput (events/s)", "Consumer lag (records)", "Watermark lag (s)",
                      "Dead letters by reason (/s)", "Late events (/s)"):
            assert prom.query(queries[title][0]), title
        stop_all_cleanly(workers)
    finally:
        prom.stop()
        for w in workers:
            w.stop()
