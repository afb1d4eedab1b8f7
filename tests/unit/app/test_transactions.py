"""Open transactions: batches share one until the commit interval passes; an abort undoes them all."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace

import pytest
from faust.types import TP

from app import transactions
from app.sinks import Sink
from app.topics import MERGE_TOPICS, register_merge_topic
from tests.unit.app.fake_producer import FakeProducer


def fake_app(producer: FakeProducer):
    """Just what `Sink.batch` uses of a Faust app under exactly_once, one partition's producer."""
    return SimpleNamespace(
        in_transaction=True, conf=SimpleNamespace(id="app"),
        assignor=SimpleNamespace(group_for_topic=lambda topic: 0),
        producer=SimpleNamespace(_transaction_producers={"app-0-3": producer},
                                 _trn_locks=defaultdict(asyncio.Lock)))


@pytest.fixture
def open_transactions(monkeypatch):
    registry = transactions.OpenTransactions()
    registry.configure(60_000)  # nothing commits by age within a test
    monkeypatch.setattr(transactions, "OPEN", registry)
    return registry


async def test_batches_share_one_transaction_which_commits_their_last_offsets_once(
        open_transactions):
    producer = FakeProducer()
    sink = Sink(fake_app(producer), "unit")
    applied = []
    for next_offset in (10, 20, 30):
        async with sink.batch(TP("orders", 3)) as out:
            await out.send("results", b"k", {"upTo": next_offset})
            out.consumed(TP("orders", 3), next_offset)
            out.after_commit(applied.append, next_offset)
    assert producer.commits == 0 and applied == []  # still open: nothing visible yet
    assert len(producer.sent) == 3  # but every output was sent at once
    await open_transactions.commit_due(sink.app.producer._trn_locks, "app", everything=True)
    assert producer.commits == 1
    assert [{(tp.topic, tp.partition): o for tp, o in offsets.items()}
            for offsets in producer.offsets] == [{("orders", 3): 30}]
    assert applied == [10, 20, 30]


async def test_a_transaction_commits_at_the_end_of_the_batch_that_finds_its_interval_passed(
        open_transactions):
    open_transactions.configure(1)
    producer = FakeProducer()
    sink = Sink(fake_app(producer), "unit")
    async with sink.batch(TP("orders", 3)) as out:
        out.consumed(TP("orders", 3), 5)
        await asyncio.sleep(0.005)
    assert producer.commits == 1
    assert not open_transactions.open


async def test_only_transactions_past_their_interval_are_committed_by_the_timer(
        open_transactions):
    open_transactions.configure(50)
    old, new = FakeProducer(), FakeProducer()
    open_transactions.join("old", old, "unit").began -= 1.0
    open_transactions.join("new", new, "unit")
    await open_transactions.commit_due(defaultdict(asyncio.Lock), "app")
    assert (old.commits, new.commits) == (1, 0)
    assert list(open_transactions.open) == ["new"]


async def test_a_batch_that_feeds_another_stage_commits_at_once(open_transactions):
    register_merge_topic("unit-partials")
    try:
        producer = FakeProducer()
        sink = Sink(fake_app(producer), "unit")
        async with sink.batch(TP("orders", 3)) as out:
            await out.send("results", b"k", b"1")
            await out.send_at_commit("wm", "app-unit-partials", b"0", b"wm", partition=0)
        assert producer.commits == 0  # nothing the other stage needs at once
        async with sink.batch(TP("orders", 3)) as out:
            await out.send("app-unit-partials", b"0", b"2", partition=0)
        assert producer.commits == 1  # the merge reads committed records only
    finally:
        MERGE_TOPICS.remove("unit-partials")


async def test_a_record_held_for_the_commit_is_sent_just_before_it_the_latest_of_its_slot(
        open_transactions):
    producer = FakeProducer()
    sink = Sink(fake_app(producer), "unit")
    for wm in (b"1", b"2"):
        async with sink.batch(TP("orders", 3)) as out:
            await out.send("results", b"k", wm)
            await out.send_at_commit(("wm", 3), "partials", b"0", wm, partition=0)
    assert [topic for topic, _, _ in producer.sent] == ["results", "results"]
    await open_transactions.commit_due(sink.app.producer._trn_locks, "app", everything=True)
    assert [(topic, args) for topic, args, _ in producer.sent][2:] == [("partials", (b"2",))]
    assert producer.commits == 1
    async with sink.batch(TP("orders", 3)) as out:
        await out.send_at_commit(("wm", 3), "partials", b"0", b"3", partition=0)
        await out.send("partials", b"0", b"4", partition=0, slot=("wm", 3))  # supersedes it
    await open_transactions.commit_due(sink.app.producer._trn_locks, "app", everything=True)
    assert [args for topic, args, _ in producer.sent if topic == "partials"] == [(b"2",), (b"4",)]


async def test_a_record_held_for_the_commit_goes_with_an_aborted_transaction(
        open_transactions):
    producer = FakeProducer()
    sink = Sink(fake_app(producer), "unit")
    with pytest.raises(ValueError):
        async with sink.batch(TP("orders", 3)) as out:
            await out.send_at_commit(("wm", 3), "partials", b"0", b"1", partition=0)
            raise ValueError("bad batch")
    async with sink.batch(TP("orders", 3)) as out:
        out.consumed(TP("orders", 3), 1)
    await open_transactions.commit_due(sink.app.producer._trn_locks, "app", everything=True)
    assert producer.aborts == 1 and producer.commits == 1 and producer.sent == []


async def test_a_failing_batch_aborts_the_transaction_and_every_batch_in_it_forgets(
        open_transactions):
    producer = FakeProducer()
    app = fake_app(producer)
    forgotten = []
    orders = Sink(app, "orders", forget=forgotten.append)
    fraud = Sink(app, "fraud", forget=forgotten.append)
    applied = []
    async with orders.batch(TP("orders", 3)) as out:
        out.after_commit(applied.append, "orders")
    with pytest.raises(ValueError):
        async with fraud.batch(TP("transactions", 3)) as out:
            raise ValueError("bad batch")
    assert producer.aborts == 1 and producer.commits == 0
    assert sorted(forgotten) == [TP("orders", 3), TP("transactions", 3)]
    assert applied == []  # the first batch's local state never follows an aborted transaction
    assert not open_transactions.open


async def test_a_failed_commit_aborts_forgets_and_raises(open_transactions):
    producer = FakeProducer(fail_commit=True)
    forgotten = []
    sink = Sink(fake_app(producer), "unit", forget=forgotten.append)
    async with sink.batch(TP("orders", 3)) as out:
        out.consumed(TP("orders", 3), 7)
    with pytest.raises(RuntimeError):
        await open_transactions.commit("app-0-3", "app")
    assert producer.aborts == 1
    assert forgotten == [TP("orders", 3)]
    await open_transactions.close("app-0-3", "app")  # nothing left open: nothing to do


async def test_a_new_producer_for_the_same_id_starts_a_new_transaction(open_transactions):
    first, second = FakeProducer(), FakeProducer()
    txn = open_transactions.join("tid", first, "unit")
    txn.consumed(TP("orders", 3), 9)
    fresh = open_transactions.join("tid", second, "unit")
    assert fresh is not txn and fresh.offsets == {}


def offsets_of(producer: FakeProducer):
    return [{(tp.topic, tp.partition): o for tp, o in offsets.items()}
            for offsets in producer.offsets]


async def consume_batches(sink: Sink, *next_offsets: int) -> None:
    """One batch per offset, each consuming orders[3] up to it, 2 ms apart."""
    for next_offset in next_offsets:
        async with sink.batch(TP("orders", 3)) as out:
            out.consumed(TP("orders", 3), next_offset)
            await asyncio.sleep(0.002)


async def test_offsets_go_with_a_transaction_at_most_once_per_their_interval(
        open_transactions):
    open_transactions.configure(1, 60_000)  # every batch commits; offsets once a minute
    producer = FakeProducer()
    sink = Sink(fake_app(producer), "unit")
    await consume_batches(sink, 10, 20, 30)
    assert producer.commits == 3
    assert offsets_of(producer) == [{("orders", 3): 10}]  # the first; then not yet due
    assert open_transactions.pending and not open_transactions.open
    # the timer leaves them while their interval runs; at stop they all go, the newest
    await open_transactions.commit_due(sink.app.producer._trn_locks, "app")
    assert producer.commits == 3
    await open_transactions.commit_due(sink.app.producer._trn_locks, "app", everything=True)
    assert producer.commits == 4 and offsets_of(producer)[-1] == {("orders", 3): 30}
    assert not open_transactions.pending


async def test_unsent_offsets_commit_alone_once_their_interval_passed_on_a_quiet_partition(
        open_transactions):
    open_transactions.configure(1, 20)
    producer = FakeProducer()
    sink = Sink(fake_app(producer), "unit")
    await consume_batches(sink, 5, 6)
    assert offsets_of(producer) == [{("orders", 3): 5}]
    await asyncio.sleep(0.03)
    await open_transactions.commit_due(sink.app.producer._trn_locks, "app")
    assert offsets_of(producer)[-1] == {("orders", 3): 6} and producer.commits == 3
    assert not open_transactions.pending


async def test_closing_before_a_rebalance_sends_the_unsent_offsets(open_transactions):
    open_transactions.configure(1, 60_000)
    producer = FakeProducer()
    sink = Sink(fake_app(producer), "unit")
    await consume_batches(sink, 5, 9)
    await open_transactions.close("app-0-3", "app")
    assert offsets_of(producer) == [{("orders", 3): 5}, {("orders", 3): 9}]
    assert not open_transactions.pending


async def test_an_aborted_transaction_keeps_the_offsets_committed_before_it_and_not_its_own(
        open_transactions):
    open_transactions.configure(1, 60_000)
    producer = FakeProducer()
    sink = Sink(fake_app(producer), "unit")
    await consume_batches(sink, 5, 9)
    with pytest.raises(ValueError):
        async with sink.batch(TP("orders", 3)) as out:
            out.consumed(TP("orders", 3), 12)
            raise ValueError("bad batch")
    await open_transactions.close("app-0-3", "app")
    assert offsets_of(producer)[-1] == {("orders", 3): 9}
