"""`weir` with faults injected, for tests: ``python -m tests.integration.faulty_worker``.

Environment (each fault is off unless its variable is set):

- ``WEIR_TEST_SLOW_COMMIT_MS``: every transaction's commit first sleeps this long (a slow
  sink);
- ``WEIR_TEST_CRASH_BEFORE_COMMIT_TO``: the process exits (``os._exit``, no clean-up, as
  kill -9) right before committing the first transaction that sent something to this topic;
- ``WEIR_TEST_CRASH_MARKER``: a file created at the crash; while it exists no crash
  happens, so a restarted worker with the same environment runs normally;
- ``WEIR_TEST_SEND_OUTSIDE_TRANSACTION=1``: records for that topic leave on a plain,
  non-transactional producer, as faust-streaming does for topics the app does not
  consume (issue #177). It takes our fix away, to show the test would catch the bug;
- ``WEIR_TEST_SLOW_REVOKE_MS``: the app's handling of a revocation first prints
  ``REBALANCE_STARTED`` and sleeps this long (a slow rebalance listener), so a test can stop
  the worker while a rebalance is in progress;
- ``WEIR_TEST_SLOW_STOP_MS``: a stopping worker waits this long before Faust stops its
  consumer and tables (a slow flush), so its consumer's thread still runs meanwhile;
- ``WEIR_TEST_FAIL_ASSIGNMENT=1``: the app's handling of an assignment of partitions raises
  ``ASSIGNMENT_FAILED`` (Faust then crashes the app, and the worker exits);
- ``WEIR_TEST_TRACE_CLIENT_CLOSE=1``: a Kafka client closed on a loop other than its own
  prints ``CLIENT_CLOSED_ELSEWHERE`` (no fault: a probe of what the worker does).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from app import sinks, transactions

CRASH_EXIT_CODE = 17
REBALANCE_STARTED = "faulty_worker: a rebalance revokes partitions"
ASSIGNMENT_FAILED = "faulty_worker: an assignment fails"
CLIENT_CLOSED_ELSEWHERE = "faulty_worker: a Kafka client closed on another loop than its own"


def install() -> None:
    if os.environ.get("WEIR_TEST_SLOW_COMMIT_MS"):
        slow_commits(int(os.environ["WEIR_TEST_SLOW_COMMIT_MS"]) / 1000)
    if os.environ.get("WEIR_TEST_CRASH_BEFORE_COMMIT_TO"):
        crash_before_commit(os.environ["WEIR_TEST_CRASH_BEFORE_COMMIT_TO"])
    if os.environ.get("WEIR_TEST_SLOW_REVOKE_MS"):
        slow_revocations(int(os.environ["WEIR_TEST_SLOW_REVOKE_MS"]) / 1000)
    if os.environ.get("WEIR_TEST_SLOW_STOP_MS"):
        slow_stop(int(os.environ["WEIR_TEST_SLOW_STOP_MS"]) / 1000)
    if os.environ.get("WEIR_TEST_FAIL_ASSIGNMENT") == "1":
        fail_assignments()
    if os.environ.get("WEIR_TEST_TRACE_CLIENT_CLOSE") == "1":
        trace_client_close()


def slow_revocations(delay_s: float) -> None:
    from faust.app.base import App  # not the app's module: the loop policy comes first

    revoked = App._on_partitions_revoked

    async def slow_revoked(self, tps):
        print(REBALANCE_STARTED, flush=True)
        await asyncio.sleep(delay_s)
        return await revoked(self, tps)

    App._on_partitions_revoked = slow_revoked


def slow_stop(delay_s: float) -> None:
    from faust.app.base import App

    on_stop = App.on_stop

    async def slow_on_stop(self):
        await asyncio.sleep(delay_s)
        await on_stop(self)

    App.on_stop = slow_on_stop


def fail_assignments() -> None:
    from faust.agents.manager import AgentManager  # the first step of Faust's assignment

    on_rebalance = AgentManager.on_rebalance

    async def failing_on_rebalance(self, revoked, newly_assigned):
        if newly_assigned:
            raise RuntimeError(ASSIGNMENT_FAILED)
        return await on_rebalance(self, revoked, newly_assigned)

    AgentManager.on_rebalance = failing_on_rebalance


def trace_client_close() -> None:
    from aiokafka.client import AIOKafkaClient

    close = AIOKafkaClient.close

    async def traced_close(self):
        if self._loop is not asyncio.get_running_loop():
            print(f"{CLIENT_CLOSED_ELSEWHERE} (on thread {threading.current_thread().name})",
                  flush=True)
        return await close(self)

    AIOKafkaClient.close = traced_close


def slow_commits(delay_s: float) -> None:
    commit = transactions.OpenTransactions.commit

    async def slow_commit(self, tid, group_id, **options):
        if tid in self.open:
            await asyncio.sleep(delay_s)
        await commit(self, tid, group_id, **options)

    transactions.OpenTransactions.commit = slow_commit


def crash_before_commit(topic: str) -> None:
    marker = Path(os.environ["WEIR_TEST_CRASH_MARKER"])
    outside = os.environ.get("WEIR_TEST_SEND_OUTSIDE_TRANSACTION") == "1"
    send, commit = sinks.Sender.send, transactions.OpenTransactions.commit
    plain = {}

    async def send_outside(key, value, partition):
        if "producer" not in plain:
            plain["producer"] = AIOKafkaProducer(
                bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"])
            await plain["producer"].start()
        data = value if value is None or isinstance(value, bytes) else orjson.dumps(value)
        await plain["producer"].send_and_wait(topic, data, key=key, partition=partition)

    async def faulty_send(self, to, key, value, partition=None, slot=None):
        if to != topic:
            return await send(self, to, key, value, partition, slot)
        self._txn.crash_due = True
        if outside:
            return await send_outside(key, value, partition)
        return await send(self, to, key, value, partition, slot)

    async def faulty_commit(self, tid, group_id, **options):
        if getattr(self.open.get(tid), "crash_due", False) and not marker.exists():
            marker.touch()
            print(f"faulty_worker: exiting before the commit of a batch sent to {topic}",
                  flush=True)
            os._exit(CRASH_EXIT_CODE)
        await commit(self, tid, group_id, **options)

    sinks.Sender.send = faulty_send
    transactions.OpenTransactions.commit = faulty_commit


if __name__ == "__main__":
    install()
    from app.cli import main

    sys.argv[0] = "weir"
    main()
