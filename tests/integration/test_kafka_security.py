"""A worker on a SASL listener of a real broker: the WEIR_KAFKA_* settings reach every client."""

from __future__ import annotations

import uuid

import pytest

from app import broker
from tests.integration.kafka_tools import Worker, free_port, produce, read_topic, wait_for
from tests.integration.prometheus_tools import scrape
from tests.integration.test_orders_pipeline import (assert_exact, fixed_input, oracle_for,
                                                    read_outputs)

pytestmark = pytest.mark.integration

USER, PASSWORD = "weir-worker", "s3cret-Pa55-for-test"


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory):
    """A broker of its own with a PLAINTEXT listener (for the test) and a SASL one (for the worker)."""
    home = tmp_path_factory.mktemp("sasl-broker")
    port, controller, sasl = free_port(), free_port(), free_port()
    broker.start(home, port, controller, sasl_port=sasl, sasl_users={USER: PASSWORD})
    try:
        yield f"127.0.0.1:{port}", f"127.0.0.1:{sasl}"
    finally:
        broker.stop(home)


def worker_env(servers: str, password: str, tmp_path) -> dict:
    suffix = uuid.uuid4().hex[:8]
    env = {"KAFKA_BOOTSTRAP_SERVERS": servers, "WEIR_APP_ID": f"weir-sasl-{suffix}",
           "WEIR_INPUT_PARTITIONS": "4", "WEIR_DATA_DIR": str(tmp_path / f"data-{suffix}"),
           "WEIR_BATCH_MAX_WAIT_MS": "50", "WEIR_IDLE_ADVANCE": "false",
           "WEIR_IDLE_TIMEOUT_MS": "120000", "WEIR_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "WEIR_KAFKA_SASL_MECHANISM": "PLAIN", "WEIR_KAFKA_SASL_USERNAME": USER,
           "WEIR_KAFKA_SASL_PASSWORD": password}
    for name in ("orders", "order-metrics", "pageviews", "pageview-metrics", "user-sessions",
                 "late-events", "dead-letters"):
        env[f"WEIR_TOPIC_{name.upper().replace('-', '_')}"] = f"{name}-{suffix}"
    return env


async def test_worker_over_sasl_emits_exact_outputs_and_logs_no_password(sasl_broker, tmp_path):
    plain, sasl = sasl_broker
    env = worker_env(sasl, PASSWORD, tmp_path)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        topic = env["WEIR_TOPIC_ORDERS"]
        wait_for(lambda: worker.proc.poll() is not None or "Topics ready" in worker.log_text(),
                 120, "topics created over SASL")
        worker.assert_running()
        messages = fixed_input(seed=9, per_partition=100)
        await produce(plain, topic, messages)
        inputs = await read_topic(plain, topic, len(messages), settle_s=0)
        expected, dead_expected = oracle_for(inputs)
        got = await read_outputs({**env, "KAFKA_BOOTSTRAP_SERVERS": plain}, expected,
                                 len(dead_expected))
        worker.assert_running()
        counted = scrape(worker.web_port)["weir_events_consumed_total"]
        assert sum(v for _, v in counted) == len(messages)
    finally:
        worker.stop()
    assert_exact(got, expected, dead_expected, inputs)
    assert PASSWORD not in worker.log_text()


async def test_worker_with_a_wrong_password_gets_no_data_and_logs_no_password(sasl_broker,
                                                                              tmp_path):
    _, sasl = sasl_broker
    wrong = "not-the-Pa55word-123"
    worker = Worker(worker_env(sasl, wrong, tmp_path), tmp_path / "worker.log").start()
    try:
        wait_for(lambda: "Authentication failed" in worker.log_text()
                 or worker.proc.poll() is not None, 90, "the broker to refuse the login")
    finally:
        worker.stop(timeout_s=30)
    log = worker.log_text()
    assert "Authentication failed" in log or "SaslAuthentication" in log, log[-3000:]
    assert "Topics ready" not in log
    assert wrong not in log and PASSWORD not in log
