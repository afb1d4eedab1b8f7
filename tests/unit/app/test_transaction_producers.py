"""The consumer's transaction manager stops producers of partitions no longer active here."""

import asyncio

from faust.transport.consumer import TransactionManager

from app.consumer import FreshProducersTransactionManager
from app.faust_app import app


class FakeProducer:
    def __init__(self, tids):
        self._transaction_producers = {tid: object() for tid in tids}
        self._trn_locks = {tid: asyncio.Lock() for tid in tids}
        self.stopped = []

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
