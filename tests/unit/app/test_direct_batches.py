"""The direct batch path: partitions of a fetch at once, one partition's batches in order,
and what a batch is known to cover."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Dict, List

import pytest
from faust.types import TP

from app import direct_batches
from app.direct_batches import FollowUp, InFlight, as_events


@dataclass
class Record:
    offset: int
    key: bytes = b"k"
    value: bytes = b"v"


def records(*offsets: int) -> List[Record]:
    return [Record(o) for o in offsets]


@pytest.fixture(autouse=True)
def clean_state(monkeypatch):
    monkeypatch.setattr(direct_batches, "HANDLERS", {})
    monkeypatch.setattr(direct_batches, "READ_THROUGH", {})
    monkeypatch.setattr(direct_batches, "IN_FLIGHT", InFlight())
    direct_batches.IN_FLIGHT.configure(8)
    monkeypatch.setattr(direct_batches, "FOLLOW_UP", FollowUp())  # 0: each fetch its own round


def test_a_batch_that_follows_the_previous_one_covers_the_holes_between():
    tp = TP("t", 0)
    first = as_events(tp, records(10, 11), generation=3)
    assert first.covers_from is None  # nothing known before the first batch
    second = as_events(tp, records(13, 15), generation=3)  # 12 and 14: commit markers
    assert second.covers_from == 12
    assert [e.message.offset for e in second] == [13, 15]


def test_a_new_generation_or_a_seek_forgets_what_was_read():
    tp = TP("t", 0)
    as_events(tp, records(10, 11), generation=3)
    assert as_events(tp, records(13), generation=4).covers_from is None
    direct_batches.positions_moved()
    assert as_events(tp, records(20), generation=4).covers_from is None


def test_a_batch_that_goes_back_is_not_trusted():
    tp = TP("t", 0)
    as_events(tp, records(10, 11), generation=3)
    assert as_events(tp, records(5, 6), generation=3).covers_from is None


class FakeApp:
    consumer_generation_id = 1


class FakeConsumer:
    """Just what `direct_batches.drain` reads of Faust's consumer: one fetch, then stop."""

    def __init__(self, fetches: List[Dict[TP, List[Record]]]) -> None:
        self.app = FakeApp()
        self.flow_active = True
        self.should_stop = False
        self._read_offset: Dict[TP, int] = {}
        self._fetches = fetches
        self._stopped = asyncio.Event()

    async def _wait_next_records(self, timeout: float):
        if not self._fetches:
            self._stopped.set()
            return {}, None
        return self._fetches.pop(0), None

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def assignment(self):
        return {TP("t", 0), TP("t", 1)}


class FakeFetcher:
    _stopped = asyncio.Event()


async def test_the_partitions_of_one_fetch_are_handled_at_the_same_time():
    both_started = asyncio.Event()
    started = []

    async def handler(partition, events):
        started.append(partition)
        if len(started) == 2:
            both_started.set()
        await asyncio.wait_for(both_started.wait(), 5)  # one after the other: times out

    direct_batches.register("t", handler)
    consumer = FakeConsumer([{TP("t", 0): records(0, 1), TP("t", 1): records(0)}])
    await asyncio.wait_for(direct_batches.drain(consumer, FakeFetcher()), 10)
    assert sorted(started) == [0, 1]
    assert consumer._read_offset == {TP("t", 0): 1, TP("t", 1): 0}


async def test_batches_of_one_partition_stay_in_order_and_a_limit_of_one_serialises():
    direct_batches.IN_FLIGHT.configure(1)
    running = 0
    seen = []

    async def handler(partition, events):
        nonlocal running
        running += 1
        assert running == 1
        await asyncio.sleep(0.01)
        seen.append((partition, events[0].message.offset))
        running -= 1

    direct_batches.register("t", handler)
    consumer = FakeConsumer([{TP("t", 0): records(0), TP("t", 1): records(0)},
                             {TP("t", 0): records(1)}])
    await asyncio.wait_for(direct_batches.drain(consumer, FakeFetcher()), 10)
    assert sorted(seen[:2]) == [(0, 0), (1, 0)] and seen[2] == (0, 1)


async def test_wait_idle_returns_once_the_batches_in_progress_are_done():
    release = asyncio.Event()
    done = []

    async def batch():
        await release.wait()
        done.append(1)

    task = asyncio.ensure_future(direct_batches.IN_FLIGHT.run(batch()))
    await asyncio.sleep(0)
    waiting = asyncio.ensure_future(direct_batches.wait_idle())
    await asyncio.sleep(0.01)
    assert not waiting.done() and direct_batches.IN_FLIGHT.count == 1
    release.set()
    await asyncio.wait_for(waiting, 5)
    assert done == [1]
    await task


async def test_a_rebalance_during_a_fetch_round_skips_the_batches_not_started():
    direct_batches.IN_FLIGHT.configure(1)
    handled = []
    consumer = None

    async def handler(partition, events):
        handled.append(partition)
        consumer.app.consumer_generation_id = 2  # a rebalance began during this batch

    direct_batches.register("t", handler)
    consumer = FakeConsumer([{TP("t", 0): records(0), TP("t", 1): records(0)}])
    await asyncio.wait_for(direct_batches.drain(consumer, FakeFetcher()), 10)
    assert len(handled) == 1
    assert list(consumer._read_offset) == [TP("t", handled[0])]  # the other is fetched again


async def test_a_round_takes_the_answer_to_the_fetch_that_follows_its_own():
    direct_batches.FOLLOW_UP.configure(3)
    seen = []

    async def handler(partition, events):
        seen.append((partition, [e.message.offset for e in events]))

    direct_batches.register("t", handler)
    consumer = FakeConsumer([{TP("t", 0): records(0, 1)},
                             {TP("t", 0): records(2), TP("t", 1): records(5)}])
    await asyncio.wait_for(direct_batches.drain(consumer, FakeFetcher()), 10)
    assert sorted(seen) == [(0, [0, 1, 2]), (1, [5])]  # one round, one batch per partition
    assert consumer._read_offset == {TP("t", 0): 2, TP("t", 1): 5}


async def test_a_rebalance_before_the_follow_up_fetch_drops_the_round():
    direct_batches.FOLLOW_UP.configure(3)
    handled = []

    async def handler(partition, events):
        handled.append(partition)

    class RebalancingConsumer(FakeConsumer):
        async def _wait_next_records(self, timeout: float):
            if len(self._fetches) == 1:  # the follow-up: the group moved on meanwhile
                self.app.consumer_generation_id += 1
            return await super()._wait_next_records(timeout)

    direct_batches.register("t", handler)
    consumer = RebalancingConsumer([{TP("t", 0): records(0)}, {TP("t", 0): records(1)}])
    await asyncio.wait_for(direct_batches.drain(consumer, FakeFetcher()), 10)
    assert handled == [] and consumer._read_offset == {}  # fetched again after the seek


async def test_a_round_runs_with_the_collector_off_and_leaves_it_on():
    import gc

    during = []

    async def handler(partition, events):
        during.append(gc.isenabled())

    direct_batches.register("t", handler)
    consumer = FakeConsumer([{TP("t", 0): records(0), TP("t", 1): records(0)}])
    await asyncio.wait_for(direct_batches.drain(consumer, FakeFetcher()), 10)
    assert during == [False, False] and gc.isenabled()
