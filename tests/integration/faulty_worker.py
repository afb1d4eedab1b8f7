"""`weir` with one injected crash, for transaction tests: ``python -m tests.integration.faulty_worker``.

Environment:

- ``WEIR_TEST_CRASH_BEFORE_COMMIT_TO``: the process exits (``os._exit``, no clean-up, as
  kill -9) right before committing the first batch that sent something to this topic;
- ``WEIR_TEST_CRASH_MARKER``: a file created at the crash; while it exists no crash
  happens, so a restarted worker with the same environment runs normally;
- ``WEIR_TEST_SEND_OUTSIDE_TRANSACTION=1``: records for that topic leave on a plain,
  non-transactional producer, as faust-streaming does for topics the app does not
  consume (issue #177). It takes our fix away, to show the test would catch the bug.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from app import sinks

CRASH_EXIT_CODE = 17


def install() -> None:
    topic = os.environ["WEIR_TEST_CRASH_BEFORE_COMMIT_TO"]
    marker = Path(os.environ["WEIR_TEST_CRASH_MARKER"])
    outside = os.environ.get("WEIR_TEST_SEND_OUTSIDE_TRANSACTION") == "1"
    send, commit = sinks.Sender.send, sinks.Sender._commit
    plain = {}

    async def send_outside(key, value, partition):
        if "producer" not in plain:
            plain["producer"] = AIOKafkaProducer(
                bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"])
            await plain["producer"].start()
        data = value if value is None or isinstance(value, bytes) else orjson.dumps(value)
        await plain["producer"].send_and_wait(topic, data, key=key, partition=partition)

    async def faulty_send(self, to, key, value, partition=None):
        if to != topic:
            return await send(self, to, key, value, partition)
        self.crash_due = True
        if outside:
            return await send_outside(key, value, partition)
        return await send(self, to, key, value, partition)

    async def faulty_commit(self, group_id):
        if getattr(self, "crash_due", False) and not marker.exists():
            marker.touch()
            print(f"faulty_worker: exiting before the commit of a batch sent to {topic}",
                  flush=True)
            os._exit(CRASH_EXIT_CODE)
        await commit(self, group_id)

    sinks.Sender.send = faulty_send
    sinks.Sender._commit = faulty_commit


if __name__ == "__main__":
    install()
    from app.cli import main

    sys.argv[0] = "weir"
    main()
