"""Throughput of 1 worker vs N workers, measured with the workers' own /metrics.

    .venv/bin/python scripts/bench_scaling.py --events 60000 --workers 1 2

For each worker count: a fresh app id and orders topic (8 partitions), the
events produced up front, then the workers started; once every partition has
an owner (``weir_partition_assigned``), the events consumed so far and the
time are noted, and the rate is taken from there until
``sum(weir_events_consumed_total)`` reaches the total (so start-up and the
first rebalance are left out). Uses ``KAFKA_BOOTSTRAP_SERVERS``, or the local
broker on ``WEIR_BROKER_PORT`` (``weir broker start``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Dict, List, Tuple

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.generator import OrderStream, produce  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.topics import provision  # noqa: E402

WEIR = str(Path(sys.executable).parent / "weir")
PARTITIONS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def samples(port: int, name: str) -> List[Tuple[Dict[str, str], float]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return []
    return [(s.labels, s.value) for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == name]


def owned(ports: List[int], topic: str) -> List[int]:
    return sorted(int(labels["partition"]) for port in ports
                  for labels, v in samples(port, "weir_partition_assigned")
                  if labels["topic"] == topic and v == 1)


def consumed(ports: List[int], topic: str) -> float:
    return sum(v for port in ports for labels, v in samples(port, "weir_events_consumed_total")
               if labels["topic"] == topic)


def run(workers: int, events: int, workdir: Path) -> Tuple[float, float]:
    """(events/s, seconds) for ``workers`` workers over ``events`` pre-produced orders."""
    suffix = uuid.uuid4().hex[:8]
    env = {**os.environ, "WEIR_APP_ID": f"bench-{suffix}", "WEIR_TOPIC_ORDERS": f"orders-{suffix}",
           "WEIR_INPUT_PARTITIONS": str(PARTITIONS), "WEIR_METRICS_INTERVAL_MS": "500",
           "WEIR_IDLE_ADVANCE": "false"}
    for name in ("order-metrics", "pageviews", "pageview-metrics", "user-sessions",
                 "late-events", "dead-letters"):
        env[f"WEIR_TOPIC_{name.upper().replace('-', '_')}"] = f"{name}-{suffix}"
    settings = Settings.from_env(env)
    topic = settings.orders_topic
    asyncio.run(provision(settings))
    stream = OrderStream(count=events, seed=1, start_ms=int(time.time() * 1000) - 3_600_000,
                         step_ms=5, disorder_ms=2_000)
    asyncio.run(produce(settings.kafka_servers, topic, stream, progress=False))
    procs, ports = [], []
    try:
        for i in range(workers):
            port = free_port()
            log = open(workdir / f"bench-{suffix}-{i}.log", "ab")
            procs.append(subprocess.Popen(
                [WEIR, "worker", "-l", "warn", "--web-port", str(port)],
                env={**env, "WEIR_DATA_DIR": str(workdir / f"data-{suffix}-{i}")},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            ports.append(port)
        deadline = time.monotonic() + 300
        while owned(ports, topic) != list(range(PARTITIONS)) or (
                workers > 1 and not all(owned([p], topic) for p in ports)):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"partitions never spread over the workers; logs in {workdir}")
            time.sleep(0.2)
        start, done_before = time.monotonic(), consumed(ports, topic)
        while consumed(ports, topic) < events:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {consumed(ports, topic)} of {events} consumed")
            time.sleep(0.2)
        seconds = time.monotonic() - start
        return (events - done_before) / seconds, seconds
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="weir-bench-"))
    print(f"| workers | events | seconds | events/s |  ({os.cpu_count()} CPUs)")
    for n in args.workers:
        rate, seconds = run(n, args.events, workdir)
        print(f"| {n} | {args.events} | {seconds:.1f} | {rate:,.0f} |", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)  # kept, with the workers' logs, after a failure


if __name__ == "__main__":
    main()
