"""The direct batch path: fetched batches go to the pipelines whole, not message by message.

Faust hands every fetched record to its agents one at a time: a `Message`, a
channel hop, an `Event`, and several asyncio tasks per record (its drain loop's
``wait_first``). Measured on a worker, that machinery took over 60% of the CPU
time and the pipelines under 5%. On this path the consumer's drain loop gives
each partition's fetched records, as one list of `LogEvent`, to the handler its
topic registered here, and awaits it, so a slow pipeline holds the fetching
(backpressure) instead of filling a buffer. Topics without a handler (changelogs
in recovery, the internal partials topics) still take Faust's path.

Everything else stays Faust's: group membership, assignment, recovery, the
transactional producers and the agents (a registering agent keeps its topic
subscribed and simply waits).
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable, Dict, List, Sequence

from faust.types import TP

from app.partition_log import LogEvent, LogMessage

log = logging.getLogger(__name__)

Handler = Callable[[int, Sequence[LogEvent]], Awaitable[None]]

#: topic name -> the pipeline handler of one partition's batch
HANDLERS: Dict[str, Handler] = {}


def register(topic: str, handler: Handler) -> None:
    HANDLERS[topic] = handler


def as_events(tp: TP, records: List) -> List[LogEvent]:
    """aiokafka records of one partition as Faust-event-shaped `LogEvent`s."""
    topic, partition = tp.topic, tp.partition
    return [LogEvent(LogMessage(topic, partition, r.offset, r.key), r.value) for r in records]


async def drain(consumer, fetcher) -> None:
    """The consumer's drain loop with whole partition batches for registered topics."""
    consumer_stopped = consumer._stopped.is_set
    fetcher_stopped = fetcher._stopped.is_set
    read_offsets = consumer._read_offset
    while not (consumer_stopped() or fetcher_stopped()):
        records, _ = await consumer._wait_next_records(1.0)
        await consumer.sleep(0)
        if not records or consumer.should_stop:
            continue
        generation = consumer.app.consumer_generation_id
        for tp, batch in records.items():
            if not consumer.flow_active or consumer.app.consumer_generation_id != generation:
                break  # a rebalance began: what was fetched is fetched again after it
            handler = HANDLERS.get(tp.topic)
            if handler is not None:
                await _handle(consumer, handler, tp, batch)
            else:
                await _one_by_one(consumer, tp, batch)
            if batch:
                read_offsets[tp] = batch[-1].offset


async def _handle(consumer, handler: Handler, tp: TP, batch: List) -> None:
    try:
        await handler(tp.partition, as_events(tp, batch))
    except Exception:  # the batch aborted: a later batch re-reads it (holes are repaired)
        if tp in consumer.assignment():
            log.exception("%s[%d]: batch of offsets %d..%d failed", tp.topic, tp.partition,
                          batch[0].offset, batch[-1].offset)
        else:
            log.info("%s[%d]: batch dropped, the partition left this worker", tp.topic,
                     tp.partition)


async def _one_by_one(consumer, tp: TP, batch: List) -> None:
    """Faust's own delivery, for topics no pipeline registered."""
    callback, read_offset = consumer.callback, consumer._read_offset.get(tp)
    for record in batch:
        if not consumer.flow_active:
            return
        if read_offset is not None and record.offset < read_offset:
            continue  # Faust drops what it already delivered
        await consumer.wait_first(callback(consumer._to_message(tp, record)),
                                  consumer.suspend_flow.wait())
