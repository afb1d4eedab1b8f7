"""Kafka transactions that stay open across batches, committed on an interval (exactly_once).

Committing every batch cost four requests in series (add the partitions, add the
offsets, commit the offsets, end the transaction) on every source partition's
producer, each round of the batch path: at 5,000 transactions/s the fraud worker
committed about 150 transactions a second, and each batch spent ~12 of its ~20 ms
waiting for its commit (its own work: under 1 ms). As in Kafka Streams (``commit.interval.ms``), a source
partition's transaction now takes its batches one after the other and commits

- once ``WEIR_COMMIT_INTERVAL_MS`` has passed since it began (checked at the end
  of each batch, and by a timer for partitions that went quiet);
- at once when a batch sent to an internal topic another stage of this app reads
  (partials, repartition topics): that stage reads committed records only; and when a
  batch emitted a window's merged result or a fraud alert (`Sender.commit_at_end`), which
  readers wait for;
- when partitions are revoked (before this member rejoins the group, so before any
  other member can own them), and when the worker stops.

Outputs are appended as soon as a batch sends them; consumers that read committed
records see them when the transaction commits. A record that another stage need not
see at once goes just before the commit instead (`Sender.send_at_commit`): appended
early, it would hold back every later record of its partition from that stage, since
a read_committed consumer reads no further than the first offset of a transaction
still open (the last stable offset). Seen on the orders partials, which every source
partition's transaction writes: a watermark that closed no window, appended in one
partition's transaction and committed up to 50 ms later, held back the watermarks
that closed a window, sent and committed at once by the other partitions. Local
state follows commits as before (`OpenTransaction.after_commit`).

The consumed offsets go with a transaction at most every
``WEIR_OFFSETS_COMMIT_INTERVAL_MS`` (and always when partitions are revoked, and
at stop); the transactions in between commit without them. Sending
them cost two more requests in series (add the offsets, commit them) in each
commit. Nothing is processed twice for it: every pipeline's state carries the
next offset it processes, committed with its outputs (`tables.state`), so a
worker that resumes from older group offsets skips what it reads again. The
group offsets say where reading resumes, not what was processed.

An abort, whichever batch causes it, undoes every batch the transaction holds, so
each batch registers what forgets its partition's in-memory state
(`OpenTransaction.on_abort`): that state is reloaded from the tables, and the
records the aborted batches had consumed are read back from the broker by the next
batch (`app.partition_log.PartitionLog.contiguous`).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple

from aiokafka import TopicPartition

from app import metrics

log = logging.getLogger(__name__)


class OpenTransaction:
    """What one producer's open transaction holds: offsets, and what follows its outcome."""

    def __init__(self, producer: Any, pipeline: str) -> None:
        self.producer = producer
        self.pipeline = pipeline  # the label of its commit and abort counters
        self.began = time.monotonic()
        self.offsets: Dict[TopicPartition, int] = {}
        self.after_commit: List[Callable[[], None]] = []
        self.on_abort: Dict[Hashable, Callable[[], None]] = {}
        self.urgent = False  # a batch fed another stage: commit at its end
        #: records sent just before the commit (`Sender.send_at_commit`), by slot
        self.at_commit: Dict[Hashable, Tuple[str, Optional[bytes], bytes, Optional[int]]] = {}

    def consumed(self, tp: TopicPartition, next_offset: int) -> None:
        if next_offset > self.offsets.get(tp, -1):
            self.offsets[tp] = next_offset

    def age_s(self) -> float:
        return time.monotonic() - self.began


class OpenTransactions:
    """The open transaction of each transactional id, and when to commit it."""

    def __init__(self) -> None:
        self.interval_s = 0.0
        self.offsets_interval_s = 0.0
        self.open: Dict[str, OpenTransaction] = {}
        #: per id, offsets of committed transactions that did not carry them yet
        self.unsent: Dict[str, Dict[TopicPartition, int]] = {}
        self._producers: Dict[str, Any] = {}  # per id with unsent offsets, its producer
        self._offsets_sent: Dict[str, float] = {}  # per id, when offsets last went

    def configure(self, interval_ms: int, offsets_interval_ms: int = 0) -> None:
        self.interval_s = interval_ms / 1000
        self.offsets_interval_s = offsets_interval_ms / 1000

    @property
    def pending(self) -> bool:
        """Anything to commit: an open transaction, or offsets not sent yet."""
        return bool(self.open or self.unsent)

    def holds(self, tid: str) -> bool:
        """``tid`` has an open transaction or offsets not sent yet."""
        return tid in self.open or tid in self.unsent

    def join(self, tid: str, producer: Any, pipeline: str) -> OpenTransaction:
        """The transaction of ``tid`` a batch adds to (the caller holds the id's lock)."""
        txn = self.open.get(tid)
        if txn is None or txn.producer is not producer:  # a new producer: a new transaction
            txn = self.open[tid] = OpenTransaction(producer, pipeline)
        return txn

    def due(self, txn: OpenTransaction) -> bool:
        return txn.urgent or txn.age_s() >= self.interval_s

    def _offsets_due(self, tid: str) -> bool:
        return time.monotonic() - self._offsets_sent.get(tid, 0.0) >= self.offsets_interval_s

    async def commit(self, tid: str, group_id: str, with_offsets: bool = False) -> None:
        """Commit ``tid``'s open transaction; with the offsets consumed so far when
        ``with_offsets`` or their interval has passed. On failure abort it and raise.
        With no open transaction but unsent offsets, those commit (``with_offsets``)."""
        txn = self.open.pop(tid, None)
        if txn is None:
            producer = self._producers.get(tid)
            if not (with_offsets and tid in self.unsent and producer is not None):
                return
            txn = OpenTransaction(producer, "offsets")  # a transaction of offsets alone
        offsets = dict(self.unsent.get(tid, {}))
        for tp, next_offset in txn.offsets.items():
            offsets[tp] = max(next_offset, offsets.get(tp, -1))
        send = bool(offsets) and (with_offsets or self._offsets_due(tid))
        try:
            for topic, key, value, partition in txn.at_commit.values():
                await txn.producer.send(topic, value, key=key, partition=partition)
            if send:
                await txn.producer.send_offsets_to_transaction(offsets, group_id)
            await txn.producer.commit_transaction()
        except BaseException:
            self.open[tid] = txn
            await self.abort(tid)
            raise
        if send:
            self._offsets_sent[tid] = time.monotonic()
            self.unsent.pop(tid, None)
            self._producers.pop(tid, None)
        elif offsets:
            self.unsent[tid] = offsets
            self._producers[tid] = txn.producer
        metrics.TRANSACTION_COMMITS.labels(txn.pipeline).inc()
        await txn.producer.begin_transaction()
        for apply in txn.after_commit:
            apply()

    async def abort(self, tid: str) -> None:
        """Abort ``tid``'s open transaction: every batch in it forgets its partition."""
        txn = self.open.pop(tid, None)
        if txn is None:
            return
        for forget in txn.on_abort.values():
            forget()
        try:
            await txn.producer.abort_transaction()
            metrics.TRANSACTION_ABORTS.labels(txn.pipeline).inc()
            await txn.producer.begin_transaction()
        except Exception as exc:  # fenced, or the broker is gone: nothing of it commits
            log.warning("Transaction %s: abort failed (%r); its batches are forgotten", tid, exc)

    async def commit_due(self, locks: Any, group_id: str, everything: bool = False) -> None:
        """Commit the transactions whose interval has passed, and the offsets left unsent
        longer than theirs (all of both, with ``everything``); ``locks``: Faust's per-id
        transaction locks (a batch in progress finishes first)."""
        for tid in list(self.open) + [t for t in self.unsent if t not in self.open]:
            txn = self.open.get(tid)
            if txn is not None:
                if not (everything or self.due(txn)):
                    continue
            elif not (everything or self._offsets_due(tid)):
                continue
            async with locks[tid]:
                if self.open.get(tid) is txn:
                    await self.commit(tid, group_id, with_offsets=everything or txn is None)

    async def close(self, tid: str, group_id: str) -> None:
        """Before ``tid``'s producer stops: commit what it holds, with the offsets, or give
        it up (what it consumed is read again, and skipped where a commit got through)."""
        try:
            await self.commit(tid, group_id, with_offsets=True)
        except Exception as exc:
            log.warning("Transaction %s: not committed before its producer stops (%r); its "
                        "batches are consumed again", tid, exc)
        finally:
            self.unsent.pop(tid, None)
            self._producers.pop(tid, None)


#: the process's open transactions (one producer per consumed partition, shared by pipelines)
OPEN = OpenTransactions()

