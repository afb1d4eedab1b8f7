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
from typing import Awaitable, Callable, Dict, List, Sequence, Set

from faust.types import TP

from app.partition_log import LogEvent, LogMessage

log = logging.getLogger(__name__)

Handler = Callable[[int, Sequence[LogEvent]], Awaitable[None]]

#: topic name -> the pipeline handler of one partition's batch
HANDLERS: Dict[str, Handler] = {}


#: partitions whose fetched batch waits for its turn in the current drain round
QUEUED: Set[TP] = set()


def register(topic: str, handler: Handler) -> None:
    HANDLERS[topic] = handler


def queued(topic: str, partition: int) -> bool:
    """True while a fetched batch of the partition waits for its turn (not a stall: a round
    handles the batches of every partition one after the other)."""
    return TP(topic, partition) in QUEUED


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
        others = {}
        round_tps = [tp for tp, batch in records.items() if batch and tp.topic in HANDLERS]
        QUEUED.update(round_tps)
        try:
            for tp, batch in records.items():
                if not consumer.flow_active or consumer.app.consumer_generation_id != generation:
                    break  # a rebalance began: what was fetched is fetched again after it
                handler = HANDLERS.get(tp.topic)
                if handler is None:
                    others[tp] = batch
                elif batch:
                    await _handle(consumer, handler, tp, batch)
                    read_offsets[tp] = batch[-1].offset
                    QUEUED.discard(tp)
        finally:
            QUEUED.difference_update(round_tps)
        if others:
            await _round_robin(consumer, others, generation)


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


async def _round_robin(consumer, records, generation: int) -> None:
    """Faust's own delivery, for topics no pipeline registered: one message at a time,
    taking the partitions in turn (Faust's scheduler), so that they interleave finely."""
    callback, read_offsets = consumer.callback, consumer._read_offset
    for tp, record in consumer.scheduler.iterate(records):
        if not consumer.flow_active or consumer.app.consumer_generation_id != generation:
            return
        read_offset = read_offsets.get(tp)
        if read_offset is not None and record.offset < read_offset:
            continue  # Faust drops what it already delivered
        await consumer.wait_first(callback(consumer._to_message(tp, record)),
                                  consumer.suspend_flow.wait())
        read_offsets[tp] = record.offset
