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
crash is recognised by its offsets and skipped.

The sinks also count what a batch did (`app.metrics`): events consumed, late
events, dead letters, transactions; the counters move only once the batch has
committed, so they count every offset once.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Sequence, Tuple

import orjson
from aiokafka import TopicPartition
from faust.types import TP, AppT, EventT

from app import metrics
from app.models import BadEvent, LateEvent, dead_letter
from tables.engine import LateItem
from tables.errors import WeirError


class Sender:
    """Sends the outputs of one batch (or timer tick) of one source partition."""

    def __init__(self, producer: Any, transactional: bool, consumer: Any = None,
                 pipeline: str = "") -> None:
        self._producer = producer
        self.transactional = transactional
        self._consumer = consumer
        self.pipeline = pipeline
        self.offsets: Dict[TopicPartition, int] = {}
        self.events_processed = 0
        self._after_commit: List[Callable[[], None]] = []

    async def send(self, topic: str, key: Optional[bytes], value: Any,
                   partition: Optional[int] = None) -> None:
        data = value if value is None or isinstance(value, bytes) else orjson.dumps(value)
        if self.transactional:
            await self._producer.send(topic, data, key=key, partition=partition)
        else:
            await self._producer.send(topic, key, data, partition, None, None)

    async def send_many(self, topic: str, partition: int,
                        records: Sequence[Tuple[bytes, Optional[bytes]]]) -> None:
        """Send already encoded ``(key, value)`` records to one partition, in order.

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
        self.offsets[TopicPartition(source.topic, source.partition)] = next_offset
        if events:
            self.events_processed += events
            self.after_commit(metrics.EVENTS_CONSUMED.labels(
                self.pipeline, source.topic, str(source.partition)).inc, events)

    def after_commit(self, apply: Callable[..., None], *args: Any) -> None:
        """Run ``apply(*args)`` (local state writes, metrics) once the batch is committed."""
        self._after_commit.append(apply if not args else lambda: apply(*args))

    async def _commit(self, group_id: str) -> None:
        if self.transactional:
            if self.offsets:
                await self._producer.send_offsets_to_transaction(self.offsets, group_id)
            await self._producer.commit_transaction()
            metrics.TRANSACTION_COMMITS.labels(self.pipeline).inc()
            await self._producer.begin_transaction()
        else:  # at least once: outputs and changelog delivered before local state moves on
            await self._producer.flush()
        for apply in self._after_commit:
            apply()
        if not self.transactional and self._consumer is not None:
            for tp, next_offset in self.offsets.items():  # committable now (app.consumer)
                self._consumer.delivered(TP(tp.topic, tp.partition), next_offset)

    async def _abort(self) -> None:
        if self.transactional:
            await self._producer.abort_transaction()
            metrics.TRANSACTION_ABORTS.labels(self.pipeline).inc()
            await self._producer.begin_transaction()


class Sink:
    """Opens a `Sender` in the transaction of a source partition; one transaction a batch."""

    def __init__(self, app: AppT, pipeline: str = "") -> None:
        self.app = app
        self.pipeline = pipeline  # the label of this sink's metrics

    def transactional_id(self, source: TP) -> str:
        """Faust's transactional id of a consumed partition."""
        group = self.app.assignor.group_for_topic(source.topic)
        return f"{self.app.conf.id}-{group}-{source.partition}"

    @asynccontextmanager
    async def batch(self, source: TP) -> AsyncIterator[Sender]:
        """Everything sent in the block commits (with the offsets it consumed) or aborts.

        Local state writes registered with `Sender.after_commit` are applied
        only after the commit, so local state never runs ahead of Kafka.
        """
        producer = self.app.producer
        started = time.monotonic()
        if not self.app.in_transaction:
            out = Sender(producer, transactional=False, consumer=self.app.consumer,
                         pipeline=self.pipeline)
            yield out
            await out._commit(self.app.conf.id)
            self._observe(out, started)
            return
        tid = self.transactional_id(source)
        txn_producer = producer._transaction_producers.get(tid)
        if txn_producer is None:
            raise WeirError(f"no transaction for {source.topic}[{source.partition}] ({tid}): "
                            "is the partition still assigned to this worker?")
        async with producer._trn_locks[tid]:  # Faust's own commit of this partition waits
            out = Sender(txn_producer, transactional=True, pipeline=self.pipeline)
            try:
                yield out
            except BaseException:
                await out._abort()
                raise
            await out._commit(self.app.conf.id)
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

