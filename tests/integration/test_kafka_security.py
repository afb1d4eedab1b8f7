"""Workers on the SASL and TLS listeners of a real broker: the WEIR_KAFKA_* settings reach
every client."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from app import broker
from tests.integration.kafka_tools import Worker, free_port, produce, read_topic, wait_for
from tests.integration.prometheus_tools import scrape
from tests.integration.test_orders_pipeline import (assert_exact, fixed_input, oracle_for,
                                                    read_outputs)

pytestmark = pytest.mark.integration

USER, PASSWORD = "weir-worker", "s3cret-Pa55-for-test"


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certificates(folder):
    """A CA, and a broker key and certificate for 127.0.0.1 signed by it (PEM files)."""
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.pem", "broker.key",
                                                         "broker.csr", "broker.pem"))
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
            "-out", str(ca), "-days", "2", "-subj", "/CN=weir-test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", "/CN=127.0.0.1")
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    keystore = folder / "broker-keystore.pem"  # PKCS#8 key, then the certificate chain
    keystore.write_text(key.read_text() + cert.read_text() + ca.read_text())
    return ca, keystore


@pytest.fixture(scope="module")
def secured_broker(tmp_path_factory):
    """A broker of its own: PLAINTEXT (for the test), SASL_PLAINTEXT and SSL (for the workers)."""
    home = tmp_path_factory.mktemp("secured-broker")
    ca, keystore = make_certificates(tmp_path_factory.mktemp("certificates"))
    port, controller, sasl, tls = free_port(), free_port(), free_port(), free_port()
    broker.start(home, port, controller, sasl_port=sasl, sasl_users={USER: PASSWORD},
                 ssl_port=tls, ssl_keystore_pem=keystore)
    try:
        yield {"plain": f"127.0.0.1:{port}", "sasl": f"127.0.0.1:{sasl}",
               "ssl": f"127.0.0.1:{tls}", "ca": str(ca)}
    finally:
        broker.stop(home)


def sasl_settings(password: str) -> dict:
    return {"WEIR_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "WEIR_KAFKA_SASL_MECHANISM": "PLAIN",
            "WEIR_KAFKA_SASL_USERNAME": USER, "WEIR_KAFKA_SASL_PASSWORD": password}


def worker_env(servers: str, security: dict, tmp_path) -> dict:
    suffix = uuid.uuid4().hex[:8]
    env = {"KAFKA_BOOTSTRAP_SERVERS": servers, "WEIR_APP_ID": f"weir-sec-{suffix}",
           "WEIR_INPUT_PARTITIONS": "4", "WEIR_DATA_DIR": str(tmp_path / f"data-{suffix}"),
           "WEIR_BATCH_MAX_WAIT_MS": "50", "WEIR_IDLE_ADVANCE": "false",
           "WEIR_IDLE_TIMEOUT_MS": "120000", **security}
    for name in ("orders", "order-metrics", "pageviews", "pageview-metrics", "user-sessions",
                 "late-events", "dead-letters"):
        env[f"WEIR_TOPIC_{name.upper().replace('-', '_')}"] = f"{name}-{suffix}"
    return env


async def run_exact_pipeline(servers: dict, listener: str, security: dict, tmp_path) -> Worker:
    """A worker on ``listener`` processes a fixed input; its outputs equal the oracle."""
    env = worker_env(servers[listener], security, tmp_path)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        topic = env["WEIR_TOPIC_ORDERS"]
        wait_for(lambda: worker.proc.poll() is not None or "Topics ready" in worker.log_text(),
                 120, f"topics created over {listener}")
        worker.assert_running()
        messages = fixed_input(seed=9, per_partition=100)
        await produce(servers["plain"], topic, messages)
        inputs = await read_topic(servers["plain"], topic, len(messages), settle_s=0)
        expected, dead_expected = oracle_for(inputs)
        got = await read_outputs({**env, "KAFKA_BOOTSTRAP_SERVERS": servers["plain"]}, expected,
                                 len(dead_expected))
        worker.assert_running()
        counted = scrape(worker.web_port)["weir_events_consumed_total"]
        assert sum(v for _, v in counted) == len(messages)
        worker.stop_cleanly()  # a graceful stop exits with status 0
    finally:
        worker.stop()
    assert_exact(got, expected, dead_expected, inputs)
    return worker


def refused(worker: Worker, needle: str) -> str:
    """Wait until the worker's log shows ``needle`` (or it exits); stop it; its log."""
    try:
        wait_for(lambda: needle in worker.log_text() or worker.proc.poll() is not None, 90,
                 f"{needle!r} in the worker's log")
    finally:
        worker.stop(timeout_s=30)
    log = worker.log_text()
    assert needle in log, log[-3000:]
    assert "Topics ready" not in log
    return log


async def test_worker_over_sasl_emits_exact_outputs_and_logs_no_password(secured_broker, tmp_path):
    worker = await run_exact_pipeline(secured_broker, "sasl", sasl_settings(PASSWORD), tmp_path)
    assert PASSWORD not in worker.log_text()


async def test_worker_with_a_wrong_password_gets_no_data_and_logs_no_password(secured_broker,
                                                                              tmp_path):
    wrong = "not-the-Pa55word-123"
    env = worker_env(secured_broker["sasl"], sasl_settings(wrong), tmp_path)
    log = refused(Worker(env, tmp_path / "worker.log").start(), "Authentication failed")
    assert wrong not in log and PASSWORD not in log


async def test_worker_over_tls_with_the_ca_file_emits_exact_outputs(secured_broker, tmp_path):
    await run_exact_pipeline(secured_broker, "ssl", {
        "WEIR_KAFKA_SECURITY_PROTOCOL": "SSL", "WEIR_KAFKA_SSL_CAFILE": secured_broker["ca"]},
        tmp_path)


async def test_worker_over_tls_without_the_ca_does_not_trust_the_broker(secured_broker, tmp_path):
    env = worker_env(secured_broker["ssl"], {"WEIR_KAFKA_SECURITY_PROTOCOL": "SSL"}, tmp_path)
    refused(Worker(env, tmp_path / "worker.log").start(), "CERTIFICATE_VERIFY_FAILED")
