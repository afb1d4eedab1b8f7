"""Outputs of every pipeline, in one transaction with the state changes that caused them.

Under ``exactly_once`` Faust keeps one transactional producer per source
partition and, now and then, commits it together with the consumed offsets.
Two things go wrong if pipelines simply call ``Topic.send``:

- Faust picks the transaction from the *destination* partition, and a topic
  the app does not consume has none at all, so outputs leave outside any
  transaction (faust-streaming issue #177);
- Faust's periodic commit may land in the middle of a batch, committing half
  of its outputs.

`Sink.batch(source)` fixes both: it holds the source partition's transaction
for the whole batch (Faust's commit waits for it), and every output and
changelog record of the batch is sent with that partition's producer. A
batch's outputs and its state (including the next source offset, see
`tables.state`) therefore commit or abort together, and a replay after a
crash is recognised by its offsets and skipped. The transaction takes the
partition's next batches too until ``WEIR_COMMIT_INTERVAL_MS`` has passed
(`app.transactions`); an abort undoes them all, and each one's pipeline forgets
the partition's in-memory state (the ``forget`` given to the `Sink`).

The sinks also count what a batch did (`app.metrics`): events consumed, late
events, dead letters, transactions; the counters move only once the batch has
committed, so they count every offset once.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import (AbstractSet, Any, AsyncIterator, Callable, Dict, FrozenSet, Hashable,
                    Iterable, List, Optional, Sequence, Tuple)

import orjson
from aiokafka import TopicPartition
from faust.types import TP, AppT, EventT

from app import metrics, transactions
from app.models import BadEvent, LateEvent, dead_letter
from app.topics import MERGE_TOPICS, REPARTITION_TOPICS
from app.transactions import OpenTransaction
from tables.engine import LateItem
from tables.errors import WeirError


class Sender:
    """Sends the outputs of one batch (or timer tick) of one source partition."""

    def __init__(self, producer: Any, transactional: bool, consumer: Any = None,
                 pipeline: str = "", txn: Optional[OpenTransaction] = None,
                 stage_topics: AbstractSet[str] = frozenset()) -> None:
        self._producer = producer
        self.transactional = transactional
        self._consumer = consumer
        self.pipeline = pipeline
        self.offsets: Dict[TopicPartition, int] = {}
        self.events_processed = 0
        self._txn = txn
        self._stage_topics = stage_topics
        self._after_commit: List[Callable[[], None]] = (
            txn.after_commit if txn is not None else [])

    async def send(self, topic: str, key: Optional[bytes], value: Any,
                   partition: Optional[int] = None, slot: Optional[Hashable] = None) -> None:
        """Send one record. To another stage's topic, it makes the transaction commit at the
        end of the batch. It replaces what `send_at_commit` held for ``slot``."""
        data = value if value is None or isinstance(value, bytes) else orjson.dumps(value)
        if self.transactional:
            if topic in self._stage_topics:  # that stage reads committed records
                self._txn.urgent = True
            if slot is not None:
                self._txn.at_commit.pop(slot, None)
            await self._producer.send(topic, data, key=key, partition=partition)
        else:
            await self._producer.send(topic, key, data, partition, None, None)

    def commit_at_end(self) -> None:
        """Commit the transaction at the end of this batch, not at its interval: what the
        batch sent is what readers wait for (a window's result)."""
        if self._txn is not None:
            self._txn.urgent = True

    async def send_at_commit(self, slot: Hashable, topic: str, key: Optional[bytes], value: Any,
                             partition: Optional[int] = None) -> None:
        """Send one record when the transaction commits, not now (it then holds back no
        later record of the partition from read_committed consumers meanwhile, and does not
        make the transaction commit early). A later record for the same ``slot`` replaces
        it. Without a transaction it is sent now."""
        if not self.transactional:
            await self.send(topic, key, value, partition)
            return
        data = value if value is None or isinstance(value, bytes) else orjson.dumps(value)
        self._txn.at_commit[slot] = (topic, key, data, partition)

    async def send_many(self, topic: str, partition: int,
                        records: Iterable[Tuple[bytes, Optional[bytes]]]) -> None:
        """Send already encoded ``(key, value)`` records to one partition, in order: a
        table's changelog records (never another stage's input, see `send`).

        Transactional: packed into the producer's record batches directly (one
        accumulator call per batch instead of one per record); otherwise one by one."""
        if not self.transactional:
            for key, value in records:
                await self.send(topic, key, value, partition)
            return
        batch = None
        for key, value in records:
            while batch is None or batch.append(key=key, value=value, timestamp=None) is None:
                if batch is not None:  # full: send it, continue in a new one
                    await self._producer.send_batch(batch, topic, partition=partition)
                batch = self._producer.create_batch()
        if batch is not None:
            await self._producer.send_batch(batch, topic, partition=partition)

    def consumed(self, source: TP, next_offset: int, events: int = 0) -> None:
        """The batch consumed ``source`` up to ``next_offset``: commit that with it.

        ``events``: how many input records of ``source`` the batch processed (each
        offset once), counted in ``weir_events_consumed_total`` once it commits.
        """
        tp = TopicPartition(source.topic, source.partition)
        if self._txn is not None:  # they go with the transaction (`app.transactions`)
            self._txn.consumed(tp, next_offset)
        else:  # committable once `_flush` has delivered the batch
            self.offsets[tp] = next_offset
        if events:
            self.events_processed += events
            self.after_commit(metrics.EVENTS_CONSUMED.labels(
                self.pipeline, source.topic, str(source.partition)).inc, events)

    def after_commit(self, apply: Callable[..., None], *args: Any) -> None:
        """Run ``apply(*args)`` (local state writes, metrics) once the batch is committed."""
        self._after_commit.append(apply if not args else lambda: apply(*args))

    async def _flush(self) -> None:
        """At least once: outputs and changelog delivered before local state moves on."""
        await self._producer.flush()
        for apply in self._after_commit:
            apply()
        if self._consumer is not None:
            for tp, next_offset in self.offsets.items():  # committable now (app.consumer)
                self._consumer.delivered(TP(tp.topic, tp.partition), next_offset)


class Sink:
    """Opens a `Sender` on a source partition's transaction for each batch (`app.transactions`:
    one transaction takes several batches, committed on an interval)."""

    def __init__(self, app: AppT, pipeline: str = "",
                 forget: Optional[Callable[[TP], None]] = None) -> None:
        self.app = app
        self.pipeline = pipeline  # the label of this sink's metrics
        self._forget = forget  # drops a source partition's in-memory state (abort)
        self._stage_topics: Optional[FrozenSet[str]] = None

    def transactional_id(self, source: TP) -> str:
        """Faust's transactional id of a consumed partition."""
        group = self.app.assignor.group_for_topic(source.topic)
        return f"{self.app.conf.id}-{group}-{source.partition}"

    def stage_topics(self) -> FrozenSet[str]:
        """The internal topics another stage of this app consumes (partials, repartition)."""
        if self._stage_topics is None:
            prefix = f"{self.app.conf.id}-"
            self._stage_topics = frozenset(prefix + suffix
                                           for suffix in MERGE_TOPICS + REPARTITION_TOPICS)
        return self._stage_topics

    @asynccontextmanager
    async def batch(self, source: TP) -> AsyncIterator[Sender]:
        """Everything sent in the block commits (with the offsets it consumed) or aborts,
        together with the batches before it in the same open transaction.

        Local state writes registered with `Sender.after_commit` are applied
        only after the commit, so local state never runs ahead of Kafka.
        """
        producer = self.app.producer
        started = time.monotonic()
        if not self.app.in_transaction:
            out = Sender(producer, transactional=False, consumer=self.app.consumer,
                         pipeline=self.pipeline)
            yield out
            await out._flush()
            self._observe(out, started)
            return
        tid = self.transactional_id(source)
        txn_producer = producer._transaction_producers.get(tid)
        if txn_producer is None:
            raise WeirError(f"no transaction for {source.topic}[{source.partition}] ({tid}): "
                            "is the partition still assigned to this worker?")
        async with producer._trn_locks[tid]:  # Faust's own commit of this partition waits
            txn = transactions.OPEN.join(tid, txn_producer, self.pipeline)
            if self._forget is not None:
                forget = self._forget
                txn.on_abort[(self.pipeline, source)] = lambda: forget(source)
            out = Sender(txn_producer, transactional=True, pipeline=self.pipeline, txn=txn,
                         stage_topics=self.stage_topics())
            try:
                yield out
            except BaseException:
                await transactions.OPEN.abort(tid)
                raise
            if transactions.OPEN.due(txn):
                await transactions.OPEN.commit(tid, self.app.conf.id)
        self._observe(out, started)

    def _observe(self, out: Sender, started: float) -> None:
        if out.events_processed:  # a batch of input, not a timer tick or a merge
            metrics.BATCH_PROCESSING.labels(self.pipeline).observe(time.monotonic() - started)


async def send_dead_letter(out: Sender, topic: str, pipeline: str, exc: BadEvent,
                           event: EventT, max_raw_bytes: int) -> None:
    msg = event.message
    record = dead_letter(pipeline, exc, event.value, msg.topic, msg.partition, msg.offset,
                         max_raw_bytes)
    await out.send(topic, msg.key, record.asdict())
    out.after_commit(metrics.DEAD_LETTERS.labels(pipeline, exc.reason).inc)


async def send_late_event(out: Sender, topic: str, pipeline: str, view: str,
                          late: LateItem[EventT]) -> None:
    event = late.item.source
    msg = event.message
    await out.send(
        topic,
        msg.key,
        LateEvent(
            pipeline=pipeline,
            view=view,
            event=orjson.loads(event.value),
            eventTimestamp=late.item.ts_ms,
            windowStart=late.window_start_ms,
            windowEnd=late.window_end_ms,
            watermark=late.watermark_ms,
            lateByMs=late.late_by_ms,
            sourceTopic=msg.topic,
            sourcePartition=msg.partition,
            sourceOffset=msg.offset,
        ).asdict(),
    )
    out.after_commit(metrics.LATE_EVENTS.labels(pipeline, view).inc)


def count_emitted(out: Sender, pipeline: str, view: str, revisions: Sequence[int]) -> None:
    """Count window (or session) results of ``view`` sent in this batch, by revision."""
    if revisions:
        out.after_commit(metrics.WINDOWS_EMITTED.labels(pipeline, view).inc, len(revisions))
        again = sum(1 for r in revisions if r > 0)
        if again:
            out.after_commit(metrics.WINDOW_REVISIONS.labels(pipeline, view).inc, again)


def future_timestamp(ts_ms: int, horizon_skew_ms: int) -> BadEvent:
    return BadEvent("future_timestamp",
                    f"timestamp {ts_ms} is more than {horizon_skew_ms} ms ahead of the wall clock")

