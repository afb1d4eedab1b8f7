"""The consumer's transaction manager stops producers of partitions no longer active here."""

import asyncio

from aiokafka import TopicPartition

from faust.transport.consumer import TransactionManager

from app import transactions
from app.consumer import FreshProducersTransactionManager
from app.faust_app import app
from tests.unit.app import fake_producer


class FakeProducer:
    def __init__(self, tids):
        self._transaction_producers = {tid: object() for tid in tids}
        self._trn_locks = {tid: asyncio.Lock() for tid in tids}
        self.stopped = []

    async def flush(self):
        pass

    async def stop_transaction(self, tid):
        self._transaction_producers.pop(tid)
        self.stopped.append(tid)


def test_the_worker_consumer_uses_the_stale_producer_stopping_manager():
    assert isinstance(app.consumer.transactions, FreshProducersTransactionManager)


async def test_every_producer_is_replaced_at_a_rebalance_even_of_partitions_kept_here(monkeypatch):
    manager = app.consumer.transactions
    producer = FakeProducer(["w-1-0", "w-1-1", "w-1-2"])
    monkeypatch.setattr(manager, "producer", producer)
    # partition 2 stays active here, 0 and 1 standbys only; any of them may have been fenced
    # by another worker while this one was out of the group
    monkeypatch.setattr(manager, "_tps_to_transactional_ids", lambda tps: {"w-1-2"})
    started = []

    async def faust_on_rebalance(self, assigned, revoked, newly_assigned):
        started.append(sorted(self.producer._transaction_producers))

    monkeypatch.setattr(TransactionManager, "on_rebalance", faust_on_rebalance)
    await manager.on_rebalance(set(), set(), set())
    assert producer.stopped == ["w-1-0", "w-1-1", "w-1-2"]
    assert started == [[]], "Faust's own rebalance runs after and starts fresh producers"


async def test_a_producer_is_stopped_only_after_the_batch_in_progress_on_it(monkeypatch):
    manager = app.consumer.transactions
    producer = FakeProducer(["w-1-0"])
    monkeypatch.setattr(manager, "producer", producer)

    async def faust_on_rebalance(self, assigned, revoked, newly_assigned):
        pass

    monkeypatch.setattr(TransactionManager, "on_rebalance", faust_on_rebalance)
    await producer._trn_locks["w-1-0"].acquire()  # a batch holds the partition's transaction
    rebalance = asyncio.ensure_future(manager.on_rebalance(set(), set(), set()))
    await asyncio.sleep(0.05)
    assert producer.stopped == []
    producer._trn_locks["w-1-0"].release()
    await asyncio.wait_for(rebalance, 5)
    assert producer.stopped == ["w-1-0"]


async def test_open_transactions_commit_with_their_offsets_when_partitions_are_revoked(
        monkeypatch):
    """Before this member rejoins, so before another can own (and fence) the partitions, and
    before the pipelines forget them: the local writes of the commit still apply."""
    registry = transactions.OpenTransactions()
    registry.configure(60_000)  # nothing is due by age
    monkeypatch.setattr(transactions, "OPEN", registry)
    manager = app.consumer.transactions
    producer = FakeProducer(["w-1-0", "w-1-1"])
    monkeypatch.setattr(manager, "producer", producer)
    txn_producer = fake_producer.FakeProducer()
    applied = []
    txn = registry.join("w-1-0", txn_producer, "unit")
    txn.consumed(TopicPartition("orders", 0), 42)
    txn.after_commit.append(lambda: applied.append("local writes"))
    await producer._trn_locks["w-1-0"].acquire()  # a batch still holds the transaction
    revoke = asyncio.ensure_future(manager.on_partitions_revoked(set()))
    await asyncio.sleep(0.05)
    assert txn_producer.commits == 0
    producer._trn_locks["w-1-0"].release()
    await asyncio.wait_for(revoke, 5)
    assert txn_producer.commits == 1 and applied == ["local writes"]
    assert txn_producer.offsets == [{TopicPartition("orders", 0): 42}]
    assert not registry.pending and producer.stopped == []  # the producers stay till assigned
