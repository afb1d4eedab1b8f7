"""Windowed views merged across partitions, on Faust tables: the shape every pipeline reuses.

A `MergedView` is one fixed-window aggregation (tumbling or hopping) of a
pipeline: a `WindowEngine` per source partition over the table
``<name>-windows`` (co-partitioned with the input), and a `MergeEngine` over
the one-partition table ``<name>-merge``. Partial results and watermarks
travel on the pipeline's one-partition partials topic as JSON records tagged
with the view's name; a `ViewMerger` agent hands each record to its view.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence

import orjson
from faust.types import TP, EventT

from app import direct_batches, monitoring
from app.clock import wall_clock_ms
from app.partition_log import PartitionLog, ReadBatch, StallWatch
from app.partitions import split_by_partition
from app.settings import Settings
from app.sinks import Sender, Sink, count_emitted
from app.topics import register_table
from tables.aggregators import Aggregator
from tables.engine import BatchResult, FixedWindow, Item, WindowEngine
from tables.faust_store import FaustTableStore
from tables.merge import MergeEngine, MergeResult

log = logging.getLogger(__name__)
#: The merge leaves a partition out of the global watermark only after this much more silence
#: than the partitions' own idle timeout: when a whole stream goes quiet, the partitions'
#: idle advances (one transaction each, committed one after the other) all reach the merge
#: before any of them can count as idle there and close a window without the others' partials.
MERGE_IDLE_GRACE_MS = 3_000
OnMerged = Callable[["MergedView", MergeResult, "Sender"], Awaitable[None]]


class MergedView:
    """One windowed aggregation of a pipeline, per partition and merged."""

    def __init__(self, app: Any, settings: Settings, name: str, window: FixedWindow,
                 aggregator: Aggregator, source_topic: str, partials_topic: str,
                 sink: Sink) -> None:
        self.name = name
        self.source_topic = source_topic
        self.partials_topic = partials_topic
        self.sink = sink
        register_table(f"{name}-windows", per_input=True)
        register_table(f"{name}-merge", per_input=False)
        self.window_store = FaustTableStore(app.Table(f"{name}-windows",
                                                      partitions=settings.input_partitions))
        self.merge_store = FaustTableStore(app.Table(f"{name}-merge", partitions=1))
        self.engine = WindowEngine(window, settings.max_out_of_orderness_ms, aggregator,
                                   self.window_store, settings.max_future_skew_ms, wall_clock_ms)
        self.merger = MergeEngine(settings.input_partitions, aggregator,
                                  window.allowed_lateness_ms,
                                  settings.idle_timeout_ms + MERGE_IDLE_GRACE_MS,
                                  self.merge_store)
        monitoring.watch_engine(sink.pipeline, name, source_topic, self.engine)
        self.window = window
        #: per partition, the watermark last sent to the merge
        self._sent_watermark: Dict[int, int] = {}

    def process(self, partition: int, items: Sequence[Item[EventT]], anchor: EventT,
                next_offset: int) -> BatchResult:
        """Fold one partition's batch; ``anchor`` is a Faust event of the partition (the
        write context of its table), ``next_offset`` the offset after the batch's last input."""
        self.window_store.bind(anchor)
        return self.engine.process(partition, items, next_offset=next_offset)

    async def publish(self, out: Sender, partition: int, result: BatchResult) -> None:
        """The batch's state changes, its windows' partial results, then its watermark."""
        await self.window_store.flush_changelog(out, partition)
        for w in result.emitted:
            await out.send(self.partials_topic, b"0", {
                "view": self.name, "kind": "partial", "partition": partition,
                "windowStart": w.start_ms, "windowEnd": w.end_ms, "acc": w.acc,
                "revision": w.revision}, partition=0)
        if result.watermark_ms is not None:
            # the merge needs it at once only if it may fire a window (partials, too, are
            # sent when the partition's watermark passes a window's end, or for late events);
            # otherwise the latest one goes with the transaction's commit
            before = self._sent_watermark.get(partition)
            fires = before is None or self.window.ends_within(before, result.watermark_ms)
            record = {"view": self.name, "kind": "watermark", "partition": partition,
                      "watermarkMs": result.watermark_ms}
            slot = (self.partials_topic, self.name, partition)
            if fires:
                await out.send(self.partials_topic, b"0", record, partition=0, slot=slot)
            else:
                await out.send_at_commit(slot, self.partials_topic, b"0", record, partition=0)
            self._sent_watermark[partition] = result.watermark_ms

    async def advance_idle(self, now_ms: int, idle_timeout_ms: int) -> None:
        """Idle partitions: event time follows the wall clock; what closes is committed now."""
        for partition in self.engine.partitions():
            async with self.sink.batch(TP(self.source_topic, partition)) as out:
                result = self.engine.advance_idle(partition, now_ms, idle_timeout_ms)
                if result.watermark_ms is not None:
                    await self.publish(out, partition, result)

    def forget(self, partition: int) -> None:
        self.engine.forget(partition)
        self.window_store.forget(partition)
        self._sent_watermark.pop(partition, None)


async def consume_in_batches(stream: Any, settings: Settings,
                             process: Callable[[int, Sequence[EventT]], Awaitable[None]],
                             direct: bool = True, max_events: int = 0,
                             forget: Optional[Callable[[TP], None]] = None,
                             first: bool = False) -> None:
    """An agent's loop: batches of up to ``WEIR_BATCH_MAX_EVENTS``, each split by source
    partition and processed partition by partition, between stops (`batch_gate`). A batch
    that fails (its transaction aborted) makes ``forget`` drop the partition's in-memory
    state, which may have run ahead of what committed; it is loaded again from the tables
    (written only after commits).

    With ``WEIR_BATCH_PATH=direct`` (default) the consumer hands the fetched batches of the
    agent's topics to ``process`` itself (`app.direct_batches`); the agent only keeps its
    topics subscribed. ``direct=False`` keeps Faust's delivery, which interleaves the
    partitions message by message; ``max_events`` caps its batches below the setting.
    ``first``: on the direct path, this agent's batches start first in each round."""
    if direct and settings.batch_path == "direct":
        size = max_events or settings.batch_max_events

        def chunks_of(topic: str):
            async def in_chunks(partition: int, events: ReadBatch) -> None:
                for i in range(0, len(events), size):
                    covers_from = (events.covers_from if i == 0
                                   else events[i - 1].message.offset + 1)
                    chunk = ReadBatch(events[i:i + size], covers_from)
                    await batch_gate.run([], lambda: _or_forget(
                        process(partition, chunk), forget, TP(topic, partition)))
            return in_chunks

        for topic in getattr(stream.channel, "topics", ()):
            direct_batches.register(topic, chunks_of(topic), first=first)
        await asyncio.Future()  # batches arrive through the consumer, not this stream
    async for events in stream.take_events(max_events or settings.batch_max_events,
                                           settings.batch_max_wait_ms / 1000):
        async def by_partition(batch: Sequence[EventT] = events) -> None:
            for partition, part in split_by_partition(batch):
                await _or_forget(process(partition, part), forget, part[0].message.tp)

        await batch_gate.run(events, by_partition)


async def _or_forget(work: Awaitable[None], forget: Optional[Callable[[TP], None]],
                     tp: TP) -> None:
    try:
        await work
    except Exception:
        if forget is not None:
            forget(tp)
        raise


async def run_tick(pipeline: str, work: Callable[[], Awaitable[None]],
                   forget_all: Callable[[], None]) -> None:
    """A timer's transactional work (idle advance, merge tick, stall checks) between stops.

    A failure does not stop the worker: it is logged, the pipeline's in-memory state is
    dropped (it may have run ahead of what committed; it is loaded again from the tables)
    and the next tick tries again. Seen: a worker frozen past its session timeout, whose
    partitions' producers another worker had fenced meanwhile, crashed on its next tick."""
    if batch_gate.closed:  # a stopping worker emits nothing more
        return
    try:
        await batch_gate.run([], work)
    except Exception:
        log.exception("%s: timer work failed; its state is reloaded from the tables", pipeline)
        forget_all()


def stall_watches(app: Any, topic: str, next_offset: Callable[[int], int],
                  process: Callable[[int, Sequence[Any]], Awaitable[None]],
                  merger: "ViewMerger") -> List[StallWatch]:
    """Watches over a pipeline's input topic and its partials topic."""
    log_reader = merger.partition_log
    pipeline = merger.sink.pipeline
    return [
        StallWatch(app, topic, log_reader, next_offset, process,
                   report_lag=monitoring.lag_reporter(pipeline, topic),
                   queued=lambda p: direct_batches.queued(topic, p)),
        StallWatch(app, merger.source.topic, log_reader, lambda p: merger.resume_offset(),
                   lambda p, events: merger.merge(events), orjson.loads,
                   report_lag=monitoring.lag_reporter(pipeline, merger.source.topic)),
    ]


async def check_watches(watches: Sequence[StallWatch], pipeline: str,
                        forget_all: Callable[[], None]) -> None:
    """One round of stall checks, each between stops; none once the worker is stopping."""
    for watch in watches:
        await run_tick(pipeline, watch.check, forget_all)


async def progress_line(pipeline: str, engine: Any, app: Any = None, topic: str = "") -> str:
    """Where each partition of a pipeline stands: next offset and watermark (and, given the
    app, the partitions of ``topic`` that Faust or the Kafka client hold paused)."""
    parts = []
    for partition in engine.partitions():
        clock = engine.clock(partition)
        wm = clock.watermark.watermark_ms
        parts.append(f"p{partition}@{clock.next_offset} wm={'-' if wm is None else wm}")
    line = f"{pipeline}: {', '.join(parts) or 'no partition yet'}"
    if app is not None:
        consumer = app.consumer
        faust_paused = sorted(tp.partition for tp in consumer._paused_partitions
                              if tp.topic == topic)
        in_client = await consumer.client_paused()  # read on the client's thread
        client_paused = sorted(tp.partition for tp in in_client or () if tp.topic == topic)
        if faust_paused or client_paused:
            client = "unknown" if in_client is None else client_paused
            line += f"; paused: faust {faust_paused}, client {client}"
    return line


class ViewMerger:
    """Feeds the records of a partials topic to the merge stage of their views."""

    def __init__(self, views: List[MergedView], partials_topic: str, sink: Sink,
                 on_merged: OnMerged, partition_log: PartitionLog) -> None:
        self.views = {v.name: v for v in views}
        self.partition_log = partition_log
        self._lock = asyncio.Lock()
        self.source = TP(partials_topic, 0)
        self.sink = sink
        self.on_merged = on_merged

    def resume_offset(self) -> int:
        """The next offset of the partials topic that the merge has not folded in."""
        for view in self.views.values():
            if not view.merger.loaded:
                view.merger.load(wall_clock_ms())
        return min(view.merger.next_offset for view in self.views.values())

    async def consume(self, stream: Any, settings: Settings) -> None:
        """The merge agent's loop over the partials topic."""
        await consume_in_batches(stream, settings, lambda partition, events: self.merge(events),
                                 forget=lambda tp: self.forget(), first=True)

    async def merge(self, events: Sequence[EventT]) -> None:
        """Merge one batch of partial records (all from the partials topic's one partition)."""
        async with self._lock:
            await self._merge(events)

    async def _merge(self, events: Sequence[EventT]) -> None:
        now_ms = wall_clock_ms()
        results: Dict[str, MergeResult] = {name: MergeResult() for name in self.views}
        anchor = events[-1]
        resume = self.resume_offset()
        events = await self.partition_log.contiguous(events, resume, orjson.loads)
        if not events:
            return
        for event in events:
            rec = event.value
            if isinstance(rec, bytes):  # from the direct path (`app.direct_batches`)
                rec = orjson.loads(rec)
            view = self.views[rec["view"]]
            merger = view.merger
            if event.message.offset < merger.next_offset:
                continue
            if rec["kind"] == "partial":
                merger.on_partial(rec["partition"], rec["windowStart"], rec["windowEnd"],
                                  rec["acc"], now_ms, results[view.name])
            else:
                merger.on_watermark(rec["partition"], rec["watermarkMs"], now_ms,
                                    results[view.name])
        async with self.sink.batch(self.source) as out:
            for view in self.views.values():
                view.merger.next_offset = events[-1].message.offset + 1
                view.merge_store.bind(anchor)
                view.merger.save()
                await view.merge_store.flush_changelog(out, self.source.partition)
                await self.on_merged(view, results[view.name], out)
                self._count(out, view, results[view.name])
                if results[view.name].emitted:  # visible to read_committed readers at once
                    out.commit_at_end()
            out.consumed(anchor.message.tp, events[-1].message.offset + 1)

    async def tick(self, now_ms: int) -> None:
        """Let idleness move the global watermarks while no partial arrives."""
        for view in self.views.values():
            if not view.merger.loaded:
                continue
            async with self.sink.batch(self.source) as out:
                result = MergeResult()
                view.merger.advance(now_ms, result)
                if result.emitted or result.late:
                    view.merger.save()
                    await view.merge_store.flush_changelog(out, self.source.partition)
                    await self.on_merged(view, result, out)
                    self._count(out, view, result)
                    if result.emitted:
                        out.commit_at_end()

    def _count(self, out: Sender, view: MergedView, result: MergeResult) -> None:
        count_emitted(out, self.sink.pipeline, view.name, [w.revision for w in result.emitted])

    def forget(self) -> None:
        for view in self.views.values():
            view.merger.forget()


class BatchGate:
    """Lets a worker stop between batches, never inside one, and lose nothing.

    Faust's ``take_events`` acks every event of the batch in hand when its agent
    is cancelled, processed or not, and its stop closes tables and flushes the
    producer before it cancels agents. So a stop first closes this gate: the
    batch in progress finishes (state, changelog and outputs), later batches are
    refused and their events marked so that Faust does not commit them (they
    are consumed again after the restart).
    """

    def __init__(self) -> None:
        self.closed = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def run(self, events: Sequence[EventT], work: Callable[[], Awaitable[None]]) -> None:
        if self.closed:
            for event in events:
                event.message.acked = True  # Faust's ack becomes a no-op: not committed
            await asyncio.Future()  # wait for the agent's cancellation
        self._in_flight += 1
        self._idle.clear()
        task = asyncio.ensure_future(work())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def close(self, timeout_s: float = 60.0) -> None:
        """Refuse new batches and wait for the ones in progress."""
        self.closed = True
        await asyncio.wait_for(self._idle.wait(), timeout_s)


batch_gate = BatchGate()
