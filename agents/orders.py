"""Order metrics: orders -> tumbling event-time windows -> order-metrics.

Two stages. Per source partition (`order_windows`): decode, fold into
windows of ``WEIR_ORDER_WINDOW_SIZE_MS`` under that partition's watermark,
and send each window's partial totals (and the watermark) to the one-partition
``<app id>-order-partials`` topic; late orders go to ``late-events``,
malformed ones to ``dead-letters``. Then `order_metrics` merges the partials
of every partition and emits each window's totals once the global watermark
(the minimum over non-idle partitions) has passed it, with later revisions
for allowed-late updates.
"""

from __future__ import annotations

import asyncio
import logging
from typing import List, Sequence

from faust.types import EventT

from app.clock import wall_clock_ms
from app.faust_app import app, settings
from app.models import BadEvent, OrderMetrics, decode_order
from app.partitions import split_by_partition
from app.sinks import future_timestamp, send_dead_letter, send_late_event
from tables.aggregators import CountAndSum
from tables.engine import BatchResult, Item, WindowEngine
from tables.faust_store import FaustTableStore
from tables.merge import MergeEngine, MergeResult
from tables.windows import TumblingWindow

PIPELINE = "orders"
log = logging.getLogger(__name__)

orders_topic = app.topic(settings.orders_topic, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw")
partials_topic = app.topic(settings.topic_name("order-partials"), partitions=1,
                           key_serializer="raw", value_serializer="json")
metrics_topic = app.topic(settings.order_metrics_topic, value_type=OrderMetrics)
late_topic = app.topic(settings.late_events_topic, value_serializer="json")
dead_topic = app.topic(settings.dead_letters_topic, value_serializer="json")

window_store = FaustTableStore(app.Table("order-windows", partitions=settings.input_partitions))
merge_store = FaustTableStore(app.Table("order-merge", partitions=1))
engine = WindowEngine(
    TumblingWindow(settings.order_window_size_ms, settings.allowed_lateness_ms),
    settings.max_out_of_orderness_ms,
    CountAndSum(),
    window_store,
    max_future_skew_ms=settings.max_future_skew_ms,
    wall_clock_ms=wall_clock_ms,
)
merger = MergeEngine(settings.input_partitions, CountAndSum(), settings.allowed_lateness_ms,
                     settings.idle_timeout_ms, merge_store)


# ---------------------------------------------------------------- stage 1: per partition

@app.agent(orders_topic)
async def order_windows(stream):
    """Consume orders in batches; each batch is split by source partition."""
    async for events in stream.take_events(settings.batch_max_events,
                                           settings.batch_max_wait_ms / 1000):
        for partition, batch in split_by_partition(events):
            # A stop must not cut a batch between its state update and its outputs.
            await asyncio.shield(process_orders(partition, batch))


async def process_orders(partition: int, events: Sequence[EventT]) -> None:
    # decode: skip what an earlier run already folded in; bad input -> dead letters
    clock = engine.clock(partition)
    items: List[Item[EventT]] = []
    for event in events:
        if clock.is_replay(event.message.offset):
            continue
        try:
            order = decode_order(event.value)
        except BadEvent as exc:
            await send_dead_letter(dead_topic, PIPELINE, exc, event)
            continue
        items.append(Item(event.message.offset, order.timestamp, order.amount, event))
    # window: fold into tumbling windows under the partition's watermark
    window_store.bind(events[-1])
    result = engine.process(partition, items, next_offset=events[-1].message.offset + 1)
    # sink: partial totals and watermark to the merge; late orders; future timestamps
    await send_partials(partition, result)
    for late in result.late:
        await send_late_event(late_topic, PIPELINE, late)
    for item in result.too_far_ahead:
        await send_dead_letter(dead_topic, PIPELINE,
                               future_timestamp(item.ts_ms, settings.max_future_skew_ms), item.source)


async def send_partials(partition: int, result: BatchResult) -> None:
    for w in result.emitted:
        await partials_topic.send(key=b"0", partition=0, value={
            "kind": "partial", "partition": partition, "windowStart": w.start_ms,
            "windowEnd": w.end_ms, "acc": w.acc, "revision": w.revision})
    if result.watermark_ms is not None:
        await partials_topic.send(key=b"0", partition=0, value={
            "kind": "watermark", "partition": partition, "watermarkMs": result.watermark_ms})


# ---------------------------------------------------------------- stage 2: merge

@app.agent(partials_topic)
async def order_metrics(stream):
    """Merge the partitions' partial totals into global windows."""
    async for events in stream.take_events(settings.batch_max_events,
                                           settings.batch_max_wait_ms / 1000):
        await asyncio.shield(merge_partials(events))


async def merge_partials(events: Sequence[EventT]) -> None:
    now_ms = wall_clock_ms()
    if not merger.loaded:
        merger.load(now_ms)
    result = MergeResult()
    for event in events:
        if event.message.offset < merger.next_offset:
            continue
        rec = event.value
        if rec["kind"] == "partial":
            merger.on_partial(rec["partition"], rec["windowStart"], rec["windowEnd"], rec["acc"],
                              now_ms, result)
        else:
            merger.on_watermark(rec["partition"], rec["watermarkMs"], now_ms, result)
    merger.next_offset = events[-1].message.offset + 1
    merge_store.bind(events[-1])
    merger.save()
    await publish_merged(result)


async def publish_merged(result: MergeResult) -> None:
    for w in result.emitted:
        count, revenue = w.acc
        await metrics_topic.send(key=str(w.start_ms).encode(), value=OrderMetrics(
            windowStart=w.start_ms, windowEnd=w.end_ms, totalOrders=count, totalRevenue=revenue,
            avgOrderValue=revenue / count if count else 0.0, revision=w.revision))
        log.info("orders window [%d, %d) revision %d: %d orders, revenue %.2f",
                 w.start_ms, w.end_ms, w.revision, count, revenue)
    for late in result.late:
        await late_topic.send(key=str(late.start_ms).encode(), value={
            "pipeline": PIPELINE, "kind": "partial", "sourcePartition": late.source_partition,
            "windowStart": late.start_ms, "windowEnd": late.end_ms, "partial": late.acc,
            "watermark": late.watermark_ms})


# ---------------------------------------------------------------- time passing without data

@app.timer(interval=1.0)
async def idle_tick() -> None:
    """Idle partitions: event time follows the wall clock; the merge drops them from its minimum."""
    now_ms = wall_clock_ms()
    if settings.idle_advance == "true":
        for partition in engine.partitions():
            await send_partials(partition, engine.advance_idle(partition, now_ms,
                                                               settings.idle_timeout_ms))
    if merger.loaded:
        result = MergeResult()
        merger.advance(now_ms, result)
        if result.emitted:
            merger.save()
            await publish_merged(result)


@app.on_partitions_revoked.connect
async def forget_revoked(app, revoked, **kwargs) -> None:
    """State of partitions this worker lost is reloaded from the tables if they return."""
    for tp in revoked:
        if tp.topic == settings.orders_topic:
            engine.forget(tp.partition)
            window_store.forget(tp.partition)
        elif tp.topic == partials_topic.get_topic_name():
            merger.forget()
