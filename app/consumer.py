"""The consumer that commits what Weir delivered, not what Faust acked.

Faust commits the offset after the last *acked* event of a partition, and it
acks events that never reached a pipeline: a batch that `take_events` held
when its agent was cancelled, events its stream buffered at a stop. A
restart then resumes past them and they are lost. Weir's sinks know better:
under ``exactly_once`` each batch's transaction carries its input offsets
(`app.sinks.Sender`), and under ``at_least_once`` a batch's offsets become
committable only once its outputs and changelog records are flushed
(`DeliveredOffsetsConsumer.delivered`). This consumer commits exactly those,
on Faust's commit timer and when partitions are revoked or the worker stops.
Faust's own bookkeeping of acked offsets still runs, so its lists stay short.

Its client waits at most ``WEIR_FETCH_MAX_WAIT_MS`` for a fetch with no new
records (Faust hard-codes 1.5 s, which became the close latency of windows
whenever one fetch covered only idle partitions).

When a rebalance reaches a stopping worker, its consumer thread closes the client on its
own loop (Faust did so from the main thread: see `ShortFetchWaitThread.close`).

It also asks the broker for the end of a changelog under ``exactly_once``:
Faust reads the last stable offset cached from the latest fetch response,
which is unknown right after a rebalance, so a recovery restarted by a
rebalance failed with a ``ConsistencyError`` (persisted offset > -1).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Set

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from faust.transport.consumer import TransactionManager
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from faust.types import TP

from app import direct_batches, fetched_records, transactions
from tables import faust_store

log = logging.getLogger(__name__)


class ShortFetchWaitThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, its client's fetch wait set from the settings, and the
    partitions Faust pauses paused in the client too (`pause_fetching`)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        from app.faust_app import settings

        fetched_records.install()
        client = super()._create_worker_consumer(transport)
        client._fetch_max_wait_ms = settings.fetch_max_wait_ms  # read when the client starts
        return client

    def pause_fetching(self, tps: Iterable[TP], paused: bool) -> None:
        """Stop (or resume) fetching ``tps`` in the client, on the client's own loop.

        Faust pauses a partition only in its own bookkeeping: the client goes on
        fetching it, and its records wait in the client's buffer for a read that never
        comes. The changelogs of the active tables stay paused that way after recovery,
        so every fetch request carried them all (85 partitions a request where the
        orders pipeline read 9), and each changelog partition's first fetched records
        (this worker's own writes) held every fetch to the broker back for the client's
        prefetch backoff, 100 ms (it fetches nothing from a broker while records it
        fetched in the last 100 ms wait unread): seen as the first window's close latency."""
        consumer = self._consumer
        if consumer is not None:
            parts = [TopicPartition(tp.topic, tp.partition) for tp in tps]
            self._soon_on_own_loop(_set_paused, consumer, parts, paused)

    def _soon_on_own_loop(self, callback: Callable[..., Any], *args: Any) -> bool:
        """Run ``callback(*args)`` on this thread's loop soon (the client's objects belong to
        it: uvloop and libuv are not thread-safe); False when the loop is closed."""
        if self.thread_loop.is_closed():
            return False
        try:
            self.thread_loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # closed meanwhile
            return False
        return True

    def _stopped_set(self) -> None:
        """Mark this service stopped on its loop, unless the loop is already closed: after a
        crash the thread has ended, and mode's stop logged "Event loop is closed" as an
        error of the stop."""
        if not self.thread_loop.is_closed():
            super()._stopped_set()

    def _crash(self, reason: BaseException) -> None:
        """Mark this service crashed on its own loop. A crash of the app reaches every service
        from the main thread (mode walks them all), and the waiters of this one's crashed
        event belong to this thread's running loop: the same race as in `close`."""
        mark = super()._crash
        if threading.current_thread() is self._thread or not self.thread_loop.is_running():
            mark(reason)
            return
        self.crash_reason = reason
        if not self._soon_on_own_loop(mark, reason):  # closed meanwhile: nothing runs there
            mark(reason)

    def close(self) -> None:
        """Close the client when a rebalance reaches a stopping worker, on the client's loop.

        Faust closes it on the app's loop (`faust.App._on_rebalance_when_stopped`), from
        the main thread, while the client's connections and its coordinator's tasks belong
        to this thread's loop: the event loop's handles were changed from two threads at
        once, and a worker stopped in the middle of a rebalance now and then died of
        SIGSEGV in this thread (uvloop and libuv are not thread-safe)."""
        consumer = self._consumer
        if consumer is None or consumer._closed:
            return
        consumer._closed = True
        log.info("A rebalance reached the stopping worker: its Kafka consumer closes now, "
                 "on its own thread")
        for closing in (consumer._client.close(), consumer._coordinator.close()):
            if not self._soon_on_own_loop(asyncio.ensure_future, closing):
                closing.close()  # the loop is closed: the thread's stop closed the client


def _set_paused(consumer: Any, parts: List[TopicPartition], paused: bool) -> None:
    """On the client's loop: pause or resume the assigned ones of ``parts`` (an assignment
    may have changed since the call)."""
    assigned = consumer.assignment()
    mine = [tp for tp in parts if tp in assigned]
    if mine:
        (consumer.pause if paused else consumer.resume)(*mine)


class FreshProducersTransactionManager(TransactionManager):
    """Faust's transaction manager, which gives every partition a fresh transactional producer
    at each rebalance.

    Faust stops the transactional producer of a revoked partition only when the partition
    leaves the worker entirely, and otherwise keeps it across rebalances. But another worker
    may have owned the partition in between, and its producer for the same transactional id
    fenced this one at the broker: a partition kept here as a standby and then returned, or
    every partition of a worker that the group dropped (frozen or starved past its session
    timeout) and that rejoined. Faust reused the fenced producer, the next batch failed
    (``Can't send messages while not in transaction``, then ``FATAL_ERROR``) and the worker
    stopped. Which producers were fenced only shows when they are used, so here every
    producer is stopped (after the batch in progress on it) before Faust starts the ones the
    new assignment needs; a new producer's ``init_transactions`` takes over the id. The
    transactions producers hold open (`app.transactions`) commit earlier, when the partitions
    are revoked (`on_partitions_revoked`); what is still open at the rebalance commits before
    its producer stops, if it still can.
    """

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Commit every open transaction while this worker still owns its partitions.

        Faust calls this once the batches in progress have finished and before this member
        rejoins the group, so no other member owns the partitions yet: the commit cannot be
        fenced, and it lands before the pipelines forget the revoked partitions' in-memory
        state, with its local writes applied (`tables.faust_store`). Left to the rebalance
        (`on_rebalance`), a partition that moved was fenced by its new owner and its batches
        read again there, and one kept here could come back from a table missing the
        transaction's writes and fold its batches in a second time."""
        await super().on_partitions_revoked(revoked)
        tids = sorted(tid for tid in self.producer._transaction_producers
                      if transactions.OPEN.holds(tid))
        if tids:
            log.info("Committing %d open transactions before the partitions are revoked",
                     len(tids))
        for tid in tids:
            async with self.producer._trn_locks[tid]:
                await transactions.OPEN.close(tid, self.app.conf.id)

    async def on_rebalance(self, assigned: Any, revoked: Any, newly_assigned: Any) -> None:
        producers = self.producer._transaction_producers
        stopping = sorted(producers)
        if stopping:
            log.info("Stopping %d transactional producers before the new assignment starts "
                     "fresh ones", len(stopping))
        for tid in stopping:
            async with self.producer._trn_locks[tid]:  # after a batch in progress on it
                await transactions.OPEN.close(tid, self.app.conf.id)
                await self.producer.stop_transaction(tid)
        await super().on_rebalance(assigned, revoked, newly_assigned)


class DeliveredOffsetsConsumer(Consumer):
    """Faust's aiokafka consumer, with offsets from `delivered` instead of from acks."""

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return ShortFetchWaitThread(self, loop=self.loop, beacon=self.beacon)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transactions = FreshProducersTransactionManager(
            self.transport, consumer=self, producer=self.app.producer, beacon=self.beacon,
            loop=self.loop)
        self._delivered: Dict[TP, int] = {}
        self._delivered_committed: Dict[TP, int] = {}

    async def _drain_messages(self, fetcher: Any) -> None:
        """Whole partition batches to the pipelines (`app.direct_batches`), when they asked."""
        if not direct_batches.HANDLERS:
            return await super()._drain_messages(fetcher)
        try:
            await direct_batches.drain(self, fetcher)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise

    async def _seek(self, partition: TP, offset: int) -> None:
        direct_batches.positions_moved()
        await super()._seek(partition, offset)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        direct_batches.positions_moved()
        return await super().seek_to_committed()

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        """Seek, with offsets below 0 (or none) read as 0 (the start of the partition).

        Faust's recovery of standby partitions once asked for an offset aiokafka refused
        after a member was killed and the group rebalanced, and the worker crashed with
        ``ValueError('Offset must be a positive integer')`` (aiokafka's words for None too).
        The cause, a pass that seeks after a rebalance refilled its offsets, is closed in
        `BulkRestoringRecovery._seek_offsets`; this stays as a second line."""
        bad = {tp: offset for tp, offset in partitions.items() if offset is None or offset < 0}
        if bad:
            log.warning("seek to offsets below 0 read as 0: %s", bad)
        direct_batches.positions_moved()
        await super().seek_wait({tp: 0 if tp in bad else offset
                                 for tp, offset in partitions.items()})

    def pause_partitions(self, tps: Iterable[TP]) -> None:
        tps = list(tps)
        super().pause_partitions(tps)
        self._thread.pause_fetching(tps, True)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        tps = list(tps)
        super().resume_partitions(tps)
        self._thread.pause_fetching(tps, False)

    async def client_paused(self, timeout_s: float = 2.0) -> Optional[Set[TopicPartition]]:
        """The partitions the Kafka client holds paused, read on the client's own thread, or
        None when it cannot tell (no client, no answer in ``timeout_s``). Its subscription
        changes on that thread: read from the main thread during a rebalance, a partition
        could leave between two lookups and the read raise (in a timer, a crash)."""
        thread = self._thread
        client = thread._consumer
        if client is None or thread.thread_loop.is_closed():
            return None
        try:
            return await asyncio.wait_for(thread.call_thread(client.paused), timeout_s)
        except (asyncio.TimeoutError, KafkaError, RuntimeError):
            return None

    def delivered(self, tp: TP, next_offset: int) -> None:
        """Everything of ``tp`` before ``next_offset`` is processed and its outputs flushed."""
        if next_offset > self._delivered.get(tp, -1):
            self._delivered[tp] = next_offset

    async def force_commit(self, topics: Optional[Any] = None,
                           start_new_transaction: bool = True) -> bool:
        # Faust's acked offsets: consumed from its lists and recorded, never committed.
        acked = self._filter_committable_offsets(self._filter_tps_with_pending_acks(topics))
        self._committed_offset.update(acked)
        if self.in_transaction:
            return False  # each batch's transaction carried its offsets
        assigned = self.assignment()
        offsets = {tp: offset for tp, offset in self._delivered.items()
                   if tp in assigned and offset > self._delivered_committed.get(tp, -1)}
        if not offsets:
            return False
        if await self._commit(offsets):
            self._delivered_committed.update(offsets)
            return True
        return False

    async def wait_empty(self) -> None:
        """Wait for the direct path's batches in progress; at a stop, do not wait for events
        no batch will ever take.

        Faust's stop waits until every event its streams received is acked. An
        event that reached ``take_events``'s buffer after the `BatchGate` closed
        is never handed to an agent, so never acked, and the stop hung until the
        process was killed (seen on the transactional internal topics, whose
        batches are re-read). Once the gate is closed the batches in progress
        have finished, and offsets here come from delivered batches, never from
        acks: the remaining events are marked acked, and are consumed again after
        the restart.
        """
        from app.windowed import batch_gate

        if direct_batches.IN_FLIGHT.count and not batch_gate.closed:
            # a rebalance: let the batches fetched before it commit first (once the gate is
            # closed, at a stop, those not yet started never will: they are fetched again)
            log.info("Waiting for %d batches in progress", direct_batches.IN_FLIGHT.count)
            await direct_batches.wait_idle()
        if batch_gate.closed and self._unacked_messages:
            log.info("Stopping: %d events no batch took will be consumed again after the restart",
                     len(self._unacked_messages))
            for message in list(self._unacked_messages):
                message.acked = True
        await super().wait_empty()

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        if not self.in_transaction:
            return await super().highwaters(*partitions)
        thread = self._thread
        # a ListOffsets request under read_committed answers the last stable offset
        return await thread.call_thread(thread._ensure_consumer().end_offsets, list(partitions))

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await super().on_partitions_revoked(revoked)  # commits, then the pipelines forget
        faust_store.write_all_unapplied()  # before the next generation's recovery
        for tp in revoked:
            self._delivered.pop(tp, None)
            self._delivered_committed.pop(tp, None)
