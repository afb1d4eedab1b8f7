"""StallWatch: partitions whose delivery stalled are read from the broker, owned ones only."""

import asyncio
from types import SimpleNamespace
from typing import Dict, List

from faust.types import TP

from app.partition_log import StallWatch

TOPIC = "orders-unit"


class FakeApp:
    """The parts of a Faust app a StallWatch reads: assignment, recovery, rebalancing."""

    def __init__(self, partitions: List[int]) -> None:
        self.owned = set(partitions)
        self.rebalancing = False
        done = asyncio.Event()
        done.set()
        self.tables = SimpleNamespace(recovery=SimpleNamespace(completed=done, in_recovery=False))
        self.assignor = SimpleNamespace(is_standby=lambda tp: False)
        self.consumer = SimpleNamespace(assignment=lambda: {
            TP(TOPIC, p) for p in self.owned})


class FakeLog:
    """Log ends and records of the topic; ``on_end_offsets`` runs while the watch awaits."""

    def __init__(self, ends: Dict[int, int], on_end_offsets=lambda: None) -> None:
        self.ends = ends
        self.on_end_offsets = on_end_offsets
        self.reads: List[int] = []

    async def end_offsets(self, topic, partitions):
        self.on_end_offsets()
        return {p: self.ends[p] for p in partitions}

    async def read(self, topic, partition, first, last, decode):
        self.reads.append(partition)
        return [SimpleNamespace(offset=o) for o in range(first, last + 1)]


def make_watch(app, log, state):
    async def process(partition, events):
        state[partition] = events[-1].offset + 1

    def next_offset(partition):
        state.setdefault(partition, 0)  # like an engine: asking loads the partition's state
        return state[partition]

    return StallWatch(app, TOPIC, log, next_offset, process, stall_s=0.0)


async def test_a_stalled_partition_is_read_from_the_broker_and_processed():
    app, state = FakeApp([0, 1]), {0: 5, 1: 10}
    log = FakeLog({0: 5, 1: 14})
    watch = make_watch(app, log, state)
    await watch.check()  # the first look only notes where each partition stands
    assert log.reads == []
    await watch.check()
    assert log.reads == [1] and state == {0: 5, 1: 14}


async def test_a_partition_revoked_while_the_watch_awaits_is_left_alone():
    app, state = FakeApp([0, 1]), {0: 5, 1: 10}
    lags = []
    log = FakeLog({0: 9, 1: 14})
    watch = make_watch(app, log, state)
    watch.report_lag = lags.append
    await watch.check()
    state.clear()  # the rebalance's revoke drops the cached state of both partitions
    log.on_end_offsets = lambda: app.owned.discard(1)
    app.owned.add(0)
    state[0] = 5  # partition 0 stays and is loaded again
    await watch.check()
    assert 1 not in state, "the revoked partition's state was loaded again"
    assert log.reads == [0] and state == {0: 9}
    assert lags[-1] == {0: 4}


async def test_nothing_is_read_while_a_rebalance_is_under_way():
    app, state = FakeApp([0]), {0: 0}
    log = FakeLog({0: 3})
    watch = make_watch(app, log, state)
    await watch.check()
    app.rebalancing = True
    await watch.check()
    assert log.reads == []


async def test_a_partition_whose_fetched_batch_waits_its_turn_is_not_stalled():
    app, state = FakeApp([0, 1]), {0: 5, 1: 10}
    log = FakeLog({0: 9, 1: 14})
    watch = make_watch(app, log, state)
    queued = {1}
    watch.queued = lambda p: p in queued
    await watch.check()
    await watch.check()
    assert log.reads == [0], "the queued partition was read again"
    queued.clear()  # its turn never came: once no batch of it waits, it is a stall
    await watch.check()
    await watch.check()
    assert log.reads == [0, 1] and state == {0: 9, 1: 14}


async def test_a_broker_that_cannot_be_reached_fails_the_check_not_the_worker():
    from aiokafka.errors import KafkaConnectionError

    def broker_down():
        raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")

    app, state = FakeApp([0]), {0: 5}
    watch = make_watch(app, FakeLog({0: 9}, on_end_offsets=broker_down), state)
    await watch.check()  # logged; the next check tries again
    assert state == {0: 5}
