"""Order metrics: orders -> tumbling event-time windows -> order-metrics.

Per source partition: decode, fold into windows of ``WEIR_ORDER_WINDOW_SIZE_MS``
under the partition's watermark, send the partial totals to the merge; late
orders go to ``late-events``, malformed ones to ``dead-letters``. The merge
emits each window's totals over all partitions once the global watermark has
passed it, then a new revision for each allowed-late update.
"""

from __future__ import annotations

import logging
from typing import List, Sequence

from faust.types import TP, EventT

from app.clock import wall_clock_ms
from app.faust_app import app, partition_log, settings
from app.models import BadEvent, OrderMetrics, decode_order
from app.sinks import Sender, Sink, future_timestamp, send_dead_letter, send_late_event
from app.topics import register_merge_topic, register_table
from app.partition_log import PartitionLocks
from app.windowed import (MergedView, ViewMerger, check_watches, consume_in_batches,
                          progress_line, run_tick, stall_watches)
from tables.aggregators import CountAndSum
from tables.dedup import SeenIds
from tables.engine import Item
from tables.faust_store import FaustTableStore
from tables.merge import MergeResult
from tables.windows import TumblingWindow

PIPELINE = "orders"
log = logging.getLogger(__name__)

register_merge_topic("orders-partials")
orders_topic = app.topic(settings.orders_topic, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw")
partials_topic = app.topic(settings.topic_name("orders-partials"), partitions=1,
                           key_serializer="raw", value_serializer="json")
sink = Sink(app, PIPELINE, forget=lambda tp: forget(tp))  # forget: defined below
limits = settings.input_limits
locks = PartitionLocks()

totals = MergedView(app, settings, "orders-totals",
                    TumblingWindow(settings.order_window_size_ms, settings.allowed_lateness_ms),
                    CountAndSum(), settings.orders_topic, partials_topic.get_topic_name(), sink)

#: order ids already delivered (upstream re-deliveries count once)
register_table("orders-seen", per_input=True)
seen_store = FaustTableStore(app.Table("orders-seen", partitions=settings.input_partitions))
seen = SeenIds(settings.dedup_ttl_ms, seen_store, "WEIR_DEDUP_TTL_MS")


@app.agent(orders_topic)
async def order_windows(stream):
    """Consume orders in batches; each batch is split by source partition."""
    await consume_in_batches(stream, settings, process_orders, forget=forget)


async def process_orders(partition: int, events: Sequence[EventT]) -> None:
    async with locks(partition):  # Faust's batches and catch-up reads, one at a time
        await _process_orders(partition, events)


async def _process_orders(partition: int, events: Sequence[EventT]) -> None:
    clock = totals.engine.clock(partition)
    anchor = events[-1]
    events = await partition_log.contiguous(events, clock.next_offset)
    if not events:
        return
    async with sink.batch(TP(settings.orders_topic, partition)) as out:
        # decode: skip what an earlier run already folded in and upstream duplicates;
        # bad input -> dead letters
        items: List[Item[EventT]] = []
        for event in events:
            if clock.is_replay(event.message.offset):
                continue
            try:
                order = decode_order(event.value, limits)
            except BadEvent as exc:
                await send_dead_letter(out, settings.dead_letters_topic, PIPELINE, exc, event,
                                       settings.max_event_bytes)
                continue
            if not seen.first_delivery(partition, order.order_id, order.timestamp):
                continue
            items.append(Item(event.message.offset, order.timestamp, order.amount, event))
        # window: fold into tumbling windows under the partition's watermark
        next_offset = events[-1].message.offset + 1
        result = totals.process(partition, items, anchor, next_offset)
        seen.expire(partition, clock.watermark.watermark_ms)
        # sink: state, partial totals to the merge, late orders, orders from the future
        await totals.publish(out, partition, result)
        seen_store.bind(anchor)
        seen.flush(partition, next_offset)
        await seen_store.flush_changelog(out, partition)
        for late in result.late:
            await send_late_event(out, settings.late_events_topic, PIPELINE, totals.name, late)
        for item in result.too_far_ahead:
            await send_dead_letter(out, settings.dead_letters_topic, PIPELINE,
                                   future_timestamp(item.ts_ms, settings.max_future_skew_ms),
                                   item.source, settings.max_event_bytes)
        out.consumed(anchor.message.tp, next_offset, events=len(events))


async def publish_totals(view: MergedView, result: MergeResult, out: Sender) -> None:
    for w in result.emitted:
        count, revenue = w.acc
        await out.send(settings.order_metrics_topic, str(w.start_ms).encode(), OrderMetrics(
            windowStart=w.start_ms, windowEnd=w.end_ms, totalOrders=count, totalRevenue=revenue,
            avgOrderValue=revenue / count if count else 0.0, revision=w.revision).asdict())
        log.info("orders window [%d, %d) revision %d: %d orders, revenue %.2f",
                 w.start_ms, w.end_ms, w.revision, count, revenue)
    for late in result.late:
        await out.send(settings.late_events_topic, str(late.start_ms).encode(), {
            "pipeline": PIPELINE, "view": view.name, "kind": "partial", "sourcePartition": late.source_partition,
            "windowStart": late.start_ms, "windowEnd": late.end_ms, "partial": late.acc,
            "watermark": late.watermark_ms})


merger = ViewMerger([totals], partials_topic.get_topic_name(), sink, publish_totals,
                    partition_log)


@app.agent(partials_topic)
async def order_metrics(stream):
    """Merge the partitions' partial totals into global windows."""
    await merger.consume(stream, settings)


@app.timer(interval=1.0)
async def orders_idle_tick() -> None:
    """Idle partitions: event time follows the wall clock; the merge drops them from its minimum."""
    async def tick() -> None:
        now_ms = wall_clock_ms()
        if settings.idle_advance == "true":
            await totals.advance_idle(now_ms, settings.idle_timeout_ms)
        await merger.tick(now_ms)

    await run_tick(PIPELINE, tick, forget_all)


@app.timer(interval=10.0)
async def orders_progress() -> None:
    log.info(await progress_line(PIPELINE, totals.engine, app, settings.orders_topic))


watches = stall_watches(app, settings.orders_topic, lambda p: totals.engine.clock(p).next_offset, process_orders, merger)


@app.timer(interval=2.0)
async def orders_stall_watch() -> None:
    """Partitions Faust's stream stopped delivering are read from the broker."""
    await check_watches(watches, PIPELINE, forget_all)


def forget(tp: TP) -> None:
    """Drop what this worker holds in memory of a partition (revoked, or its batch failed);
    it is loaded again from the tables if the partition is processed here again."""
    if tp.topic == settings.orders_topic:
        totals.forget(tp.partition)
        seen.forget(tp.partition)
        seen_store.forget(tp.partition)
    elif tp.topic == partials_topic.get_topic_name():
        merger.forget()


def forget_all() -> None:
    for partition in totals.engine.partitions():
        forget(TP(settings.orders_topic, partition))
    merger.forget()


@app.on_partitions_revoked.connect
async def forget_revoked(app, revoked, **kwargs) -> None:
    for tp in revoked:
        forget(tp)
