"""A slow sink slows consumption down; the worker does not buffer the backlog in memory.

Every batch's commit is delayed (a sink that takes its time; 1 s for 50 events, so even
with the 4 partitions' batches in progress at once, under half the input is done in 25 s). 80 MB of orders
wait in the topic; the worker must pause fetching (Faust's stream buffer and
Kafka's flow control) rather than read the backlog into memory, so its
resident memory grows by far less than the backlog while it works through it.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from pathlib import Path

import pytest

from tests.integration.kafka_tools import Worker, produce, wait_for

pytestmark = pytest.mark.integration

FAULTY_WEIR = [sys.executable, "-m", "tests.integration.faulty_worker"]
EVENTS, PAYLOAD_BYTES = 20_000, 4_000


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def processed(log_text: str) -> int:
    """Events folded in so far, from the worker's last progress line."""
    lines = re.findall(r"orders: (p\d+@\d+.*)", log_text)
    return sum(int(n) for n in re.findall(r"p\d+@(\d+)", lines[-1])) if lines else 0


async def test_slow_sink_pauses_consumption_and_memory_stays_bounded(pipeline_env, tmp_path):
    env = {**pipeline_env, "WEIR_TEST_SLOW_COMMIT_MS": "1000", "WEIR_BATCH_MAX_EVENTS": "50",
           "WEIR_COMMIT_INTERVAL_MS": "1"}  # every batch commits: a slow sink per batch
    padding = "x" * PAYLOAD_BYTES
    messages = [(i % 4, None, json.dumps({
        "orderId": f"o{i}", "userId": "u", "amount": 1.0, "timestamp": 1_700_000_000_000 + i,
        "productId": padding}).encode()) for i in range(EVENTS)]
    backlog_mb = sum(len(v) for _, _, v in messages) / 2**20
    worker = Worker(env, tmp_path / "worker.log", FAULTY_WEIR).start()
    try:
        await asyncio.to_thread(wait_for, lambda: "Worker ready" in worker.log_text(), 90,
                                "the worker to be ready")
        baseline = rss_mb(worker.proc.pid)
        await produce(env["KAFKA_BOOTSTRAP_SERVERS"], env["WEIR_TOPIC_ORDERS"], messages)
        peak, started = baseline, time.monotonic()
        while time.monotonic() - started < 25:
            worker.assert_running()
            peak = max(peak, rss_mb(worker.proc.pid))
            await asyncio.sleep(0.5)
        log = worker.log_text()
        done = processed(log)
    finally:
        worker.kill()  # a graceful stop would wait for the slow sink
    print(f"backlog {backlog_mb:.0f} MB ({EVENTS} events); worker RSS {baseline:.0f} MB at start, "
          f"peak {peak:.0f} MB (+{peak - baseline:.0f} MB); {done} events processed in 25 s")
    # slow, not failing: a commit that fails is consumed again, which also slows it down
    assert "did not commit" not in log, "a commit failed: the fault must only delay them"
    assert 0 < done < EVENTS // 2, "the slow sink must slow consumption down"
    assert peak - baseline < backlog_mb / 2, "the backlog must stay in Kafka, not in memory"
