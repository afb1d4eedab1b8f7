"""One real Kafka broker per test session (started from the project's Maven jars).

Under pytest-xdist (``make test`` runs ``pytest -n 2``) each test process starts
its own broker: process ``gwN`` on ports ``WEIR_TEST_BROKER_PORT + 10 * N`` (and
the controller port likewise), home ``<WEIR_TEST_BROKER_HOME>-gwN`` for N > 0, so
a test that stops its broker never disturbs the other process. The jars are
fetched once, before the test processes start.

Set KAFKA_BOOTSTRAP_SERVERS to run the integration tests against an existing
cluster instead; then nothing is started.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]

# Property tests check results, not speed: Hypothesis' default 200 ms deadline per example
# failed a window test on a 2-core machine busy with brokers and workers (282 ms).
settings.register_profile("weir", deadline=None)
settings.load_profile("weir")


@dataclass(frozen=True)
class SessionBroker:
    """The session's broker: where it runs, and (when this session started it) its home."""

    servers: str
    home: Optional[Path] = None
    port: int = 0
    controller_port: int = 0


def _broker_home() -> Path:
    return Path(os.environ.get("WEIR_TEST_BROKER_HOME", ROOT / ".weir" / "test-broker"))


def pytest_configure(config):
    """With several test processes, fetch the broker's jars once, here, so that they do
    not all run Maven into the same local repository at once."""
    if (getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput")
            and not os.environ.get("KAFKA_BOOTSTRAP_SERVERS")):
        from app import broker

        broker.ensure_jars(_broker_home())


@pytest.fixture(scope="session")
def kafka_broker(worker_id):
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield SessionBroker(existing)
        return
    from app import broker

    index = int(worker_id[2:]) if worker_id.startswith("gw") else 0
    home = _broker_home()
    if index:
        home = home.with_name(f"{home.name}-gw{index}")
    port = int(os.environ.get("WEIR_TEST_BROKER_PORT", "19092")) + 10 * index
    controller_port = int(os.environ.get("WEIR_TEST_BROKER_CONTROLLER_PORT", "19093")) + 10 * index
    broker.wipe(home)  # a fresh cluster per session: no state from earlier runs
    broker.ensure_jars(home)
    broker.start(home, port, controller_port)
    try:
        yield SessionBroker(f"127.0.0.1:{port}", home, port, controller_port)
    finally:
        broker.stop(home)


@pytest.fixture(scope="session")
def kafka_servers(kafka_broker):
    return kafka_broker.servers


@pytest.fixture
def pipeline_env(kafka_servers, tmp_path):
    """Environment of a worker with its own app id and topics, so tests never share state."""
    return worker_environment(kafka_servers, tmp_path / "worker-data")


def worker_environment(kafka_servers: str, data_dir: Path) -> dict:
    """A worker's settings with a fresh app id and topics, strict event time, fast batches."""
    suffix = uuid.uuid4().hex[:8]
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_servers,
        "WEIR_APP_ID": f"weir-test-{suffix}",
        "WEIR_TOPIC_ORDERS": f"orders-{suffix}",
        "WEIR_TOPIC_ORDER_METRICS": f"order-metrics-{suffix}",
        "WEIR_TOPIC_PAGEVIEWS": f"pageviews-{suffix}",
        "WEIR_TOPIC_PAGEVIEW_METRICS": f"pageview-metrics-{suffix}",
        "WEIR_TOPIC_USER_SESSIONS": f"user-sessions-{suffix}",
        "WEIR_TOPIC_TRANSACTIONS": f"transactions-{suffix}",
        "WEIR_TOPIC_FRAUD_ALERTS": f"fraud-alerts-{suffix}",
        "WEIR_TOPIC_LATE_EVENTS": f"late-events-{suffix}",
        "WEIR_TOPIC_DEAD_LETTERS": f"dead-letters-{suffix}",
        "WEIR_INPUT_PARTITIONS": "4",
        "WEIR_DATA_DIR": str(data_dir),
        "WEIR_BATCH_MAX_WAIT_MS": "50",
        "WEIR_IDLE_ADVANCE": "false",  # strict replay: only event time closes windows
        "WEIR_IDLE_TIMEOUT_MS": "120000",
    }
