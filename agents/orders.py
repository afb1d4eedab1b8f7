"""Order metrics: orders -> tumbling event-time windows -> order-metrics.

Per window of ``WEIR_ORDER_WINDOW_SIZE_MS`` and source partition: total
orders, revenue and average order value, emitted once when the partition's
watermark reaches the window's end. Late orders go to ``late-events``,
malformed ones to ``dead-letters``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import List, Sequence

import orjson
from faust.types import EventT

from app.faust_app import app, settings
from app.models import BadEvent, LateEvent, OrderMetrics, dead_letter, decode_order
from app.partitions import split_by_partition
from tables.aggregators import CountAndSum
from tables.engine import BatchResult, Item, WindowEngine
from tables.faust_store import FaustTableStore
from tables.windows import TumblingWindow

PIPELINE = "orders"
log = logging.getLogger(__name__)

orders_topic = app.topic(settings.orders_topic, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw")
metrics_topic = app.topic(settings.order_metrics_topic, value_type=OrderMetrics)
late_topic = app.topic(settings.late_events_topic, value_type=LateEvent)
dead_topic = app.topic(settings.dead_letters_topic, value_serializer="json")

window_table = app.Table("order-windows", partitions=settings.input_partitions)
store = FaustTableStore(window_table)
engine = WindowEngine(
    TumblingWindow(settings.order_window_size_ms, setting="WEIR_ORDER_WINDOW_SIZE_MS"),
    settings.max_out_of_orderness_ms,
    CountAndSum(),
    store,
)


@app.agent(orders_topic)
async def order_metrics(stream):
    """Consume orders in batches; each batch is split by source partition."""
    async for events in stream.take_events(
        settings.batch_max_events, settings.batch_max_wait_ms / 1000
    ):
        for partition, batch in split_by_partition(events):
            # A stop must not cut a batch between its state update and its outputs.
            await asyncio.shield(process_partition_batch(partition, batch))


async def process_partition_batch(partition: int, events: Sequence[EventT]) -> None:
    # decode: skip what an earlier run already folded into state; bad input -> dead letters
    resume = engine.state(partition).next_offset
    items: List[Item[EventT]] = []
    for event in events:
        msg = event.message
        if msg.offset < resume:
            continue
        try:
            order = decode_order(event.value)
        except BadEvent as exc:
            await dead_topic.send(value=dead_letter(PIPELINE, exc, event.value, msg.topic,
                                                    partition, msg.offset).asdict())
            continue
        items.append(Item(msg.offset, order.timestamp, order.amount, event))
    # window: fold into tumbling windows, close what the watermark passed
    store.bind(events[-1])
    result = engine.process(partition, items, next_offset=events[-1].message.offset + 1)
    # sink: closed windows, then late events
    await publish(partition, result)


async def publish(partition: int, result: BatchResult[EventT]) -> None:
    for closed in result.closed:
        count, revenue = closed.acc
        await metrics_topic.send(
            key=f"{closed.start_ms}:{partition}".encode(),
            value=OrderMetrics(
                windowStart=closed.start_ms,
                windowEnd=closed.end_ms,
                totalOrders=count,
                totalRevenue=revenue,
                avgOrderValue=revenue / count,
                sourcePartition=partition,
            ),
        )
        log.info("window [%d, %d) partition %d closed: %d orders, revenue %.2f",
                 closed.start_ms, closed.end_ms, partition, count, revenue)
    for late in result.late:
        msg = late.item.source.message
        await late_topic.send(
            key=msg.key,
            value=LateEvent(
                pipeline=PIPELINE,
                event=orjson.loads(late.item.source.value),
                eventTimestamp=late.item.ts_ms,
                windowStart=late.window_start_ms,
                windowEnd=late.window_end_ms,
                watermark=late.watermark_ms,
                lateByMs=late.late_by_ms,
                sourceTopic=msg.topic,
                sourcePartition=msg.partition,
                sourceOffset=msg.offset,
            ),
        )


@app.on_partitions_revoked.connect
async def forget_revoked(app, revoked, **kwargs) -> None:
    """State of partitions this worker lost is reloaded from the table if they return."""
    for tp in revoked:
        if tp.topic == settings.orders_topic:
            engine.forget(tp.partition)
