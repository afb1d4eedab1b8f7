"""Test helpers around the real broker: produce fixed inputs, read topics back, run workers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

WEIR = os.path.join(os.path.dirname(sys.executable), "weir")


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: Optional[bytes]
    value: Optional[bytes]


async def produce(servers: str, topic: str, messages: Iterable[Tuple[int, bytes, bytes]]) -> None:
    """Send (partition, key, value) messages in order and wait until all are acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key, partition=p) for p, key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def stream_slowly(servers: str, topic: str, messages: List[Tuple[int, bytes, bytes]],
                        chunk: int = 20, pause_s: float = 0.12,
                        sent: Optional[List[int]] = None) -> None:
    """Produce ``messages`` in chunks with pauses, as a live source would; ``sent`` (when
    given) gets the count of messages acknowledged after each chunk."""
    for i in range(0, len(messages), chunk):
        await produce(servers, topic, messages[i:i + chunk])
        if sent is not None:
            sent.append(min(i + chunk, len(messages)))
        await asyncio.sleep(pause_s)


async def read_topic(servers: str, topic: str, at_least: int = 0, timeout_s: float = 60.0,
                     settle_s: float = 1.0, until=None) -> List[Record]:
    """Every committed record of ``topic``, waiting until there are ``at_least``
    (and ``until(records)`` holds, when given).

    After the count is reached it keeps reading for ``settle_s`` more, so a
    duplicate emitted late is still seen.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, isolation_level="read_committed",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        for _ in range(50):
            if partitions:
                break
            await asyncio.sleep(0.1)
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: List[Record] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        settle_until = None
        while loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for tp, msgs in batches.items():
                records += [Record(tp.topic, tp.partition, m.offset, m.key, m.value) for m in msgs]
            if len(records) >= at_least and (until is None or until(records)):
                settle_until = settle_until or loop.time() + settle_s
                if loop.time() >= settle_until:
                    break
        print(f"read {len(records)}/{at_least} records of {topic} in {timeout_s - (deadline - loop.time()):.1f}s")
        return records
    finally:
        await consumer.stop()


async def new_topic(servers: str, prefix: str, partitions: int = 1) -> str:
    """A fresh topic named ``<prefix>-<random>``."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


def interleaved(messages):
    """The same messages (same order within each partition), partitions taking turns: every
    partition's event time, so the merged watermark, moves on from the start of a stream."""
    queues: Dict[int, List] = {}
    for m in messages:
        queues.setdefault(m[0], []).append(m)
    out = []
    while any(queues.values()):
        for q in queues.values():
            if q:
                out.append(q.pop(0))
    return out


def mid_stream_split(messages, share: float = 0.6):
    """The messages interleaved, cut in two: a test streams the first part, waits for the first
    output (made within it), stops or kills the worker, and only then streams the rest, so the
    stop comes mid-stream however slow the machine."""
    messages = interleaved(messages)
    cut = int(len(messages) * share)
    return messages[:cut], messages[cut:]


def redeliver_some(rnd, messages: list, earlier: list, share: float = 0.04,
                   recent: int = 30) -> None:
    """Now and then send one of the last ``recent`` of the ``earlier`` messages again, as an
    upstream retry does: soon, well within the dedup TTL (``WEIR_DEDUP_TTL_MS``, 5 min of
    event time; a copy that comes later than that is a new event, as the TTL means)."""
    if rnd.random() < share:
        messages.append(rnd.choice(earlier[-recent:]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    """A real `weir worker` process with its own environment and log file."""

    def __init__(self, env: Dict[str, str], log_path: Path,
                 program: Optional[List[str]] = None) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.program = program or [WEIR]  # or a wrapper of `weir`, e.g. with a fault injected
        self.proc: Optional[subprocess.Popen] = None
        self.web_port = 0
        self._ready_before = 0  # "Worker ready" lines in the log before the last start

    def start(self) -> "Worker":
        self.web_port = self.web_port or free_port()  # kept across restarts, or set beforehand
        self._ready_before = (self.log_text().count("Worker ready")
                              if self.log_path.exists() else 0)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.program, "worker", "-l", "info", "--web-port", str(self.web_port)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self, timeout_s: float = 90.0) -> "Worker":
        """Until this start has recovered its tables and joined the group ("Worker ready"):
        a test that streams input from here on knows the worker is reading it."""
        await asyncio.to_thread(
            wait_for, lambda: self.log_text().count("Worker ready") > self._ready_before,
            timeout_s, f"{self.log_path.name}: the worker to be ready")
        self.assert_running()
        return self

    def stop(self, timeout_s: float = 60.0) -> int:
        """Graceful stop (SIGTERM), as a container runtime does."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def stop_cleanly(self, timeout_s: float = 60.0) -> None:
        """Graceful stop that must end with exit status 0; else the log's end is shown
        (a crash in native code leaves every thread's stack there: ``faulthandler``)."""
        code = self.stop(timeout_s)
        assert code == 0, f"{self.log_path.name}: exit status {code}:\n{self.log_text()[-6000:]}"

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def assert_running(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, (
            f"worker exited ({self.proc and self.proc.returncode}):\n{self.log_text()[-4000:]}"
        )


def stop_all_cleanly(workers: List["Worker"], timeout_s: float = 60.0) -> None:
    """Stop the workers one after the other (each stop rebalances the others), then check that
    each exited with status 0."""
    for worker in workers:
        worker.stop(timeout_s)
    for worker in workers:
        worker.stop_cleanly(timeout_s)


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
