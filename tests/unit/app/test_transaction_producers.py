"""The consumer's transaction manager stops producers of partitions no longer active here."""

import asyncio

from faust.transport.consumer import TransactionManager

from app.consumer import StaleProducerStoppingTransactionManager
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
    assert isinstance(app.consumer.transactions, StaleProducerStoppingTransactionManager)


async def test_producers_of_partitions_kept_only_as_standbys_are_stopped(monkeypatch):
    manager = app.consumer.transactions
    producer = FakeProducer(["w-1-0", "w-1-1", "w-1-2"])
    monkeypatch.setattr(manager, "producer", producer)
    # the new assignment: partition 2 active here, partitions 0 and 1 standbys only
    monkeypatch.setattr(manager, "_tps_to_transactional_ids", lambda tps: {"w-1-2"})
    started = []

    async def faust_on_rebalance(self, assigned, revoked, newly_assigned):
        started.append(sorted(self.producer._transaction_producers))

    monkeypatch.setattr(TransactionManager, "on_rebalance", faust_on_rebalance)
    await manager.on_rebalance(set(), set(), set())
    assert producer.stopped == ["w-1-0", "w-1-1"]
    assert started == [["w-1-2"]], "Faust's own rebalance runs after, with the fresh set"
