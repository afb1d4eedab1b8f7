"""A transactional producer stand-in for the sink tests: it records what it was asked to do."""

from __future__ import annotations


class FakeProducer:
    def __init__(self, fail_commit: bool = False) -> None:
        self.sent, self.offsets, self.commits, self.aborts = [], [], 0, 0
        self.fail_commit = fail_commit

    async def send(self, topic, *args, **kwargs):  # a transactional or a Faust producer's
        self.sent.append((topic, args, kwargs))

    async def flush(self):
        pass

    async def send_offsets_to_transaction(self, offsets, group_id):
        self.offsets.append(dict(offsets))

    async def commit_transaction(self):
        if self.fail_commit:
            raise RuntimeError("broker gone")
        self.commits += 1

    async def abort_transaction(self):
        self.aborts += 1

    async def begin_transaction(self):
        pass
