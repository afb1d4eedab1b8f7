"""The direct batch path: fetched batches go to the pipelines whole, not message by message.

Faust hands every fetched record to its agents one at a time: a `Message`, a
channel hop, an `Event`, and several asyncio tasks per record (its drain loop's
``wait_first``). Measured on a worker, that machinery took over 60% of the CPU
time and the pipelines under 5%. On this path the consumer's drain loop gives
each partition's fetched records, as one list of events (`app.fetched_records`),
to the handler its topic registered here, and awaits it, so a slow pipeline holds the fetching
(backpressure) instead of filling a buffer. Topics without a handler (changelogs
in recovery, the internal partials topics) still take Faust's path.

Everything else stays Faust's: group membership, assignment, recovery, the
transactional producers and the agents (a registering agent keeps its topic
subscribed and simply waits).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Dict, List, Optional, Sequence, Set, Tuple

from faust.types import TP

from app import gc_tuning
from app.fetched_records import FetchedRecord
from app.partition_log import LogEvent, ReadBatch

log = logging.getLogger(__name__)

Handler = Callable[[int, Sequence[LogEvent]], Awaitable[None]]

#: topic name -> the pipeline handler of one partition's batch
HANDLERS: Dict[str, Handler] = {}


#: partitions with a fetched batch in the current drain round, waiting for a slot or in hand
QUEUED: Set[TP] = set()


class InFlight:
    """The batches being handled now: at most ``limit`` at once; `wait_idle` for none."""

    def __init__(self) -> None:
        self.limit = 1
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._slots: Optional[asyncio.Semaphore] = None

    def configure(self, limit: int) -> None:
        self.limit = limit
        self._slots = None  # created again on the running loop

    async def run(self, work: Awaitable[None]) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)
        async with self._slots:
            self._count += 1
            self._idle.clear()
            try:
                await work
            finally:
                self._count -= 1
                if not self._count:
                    self._idle.set()

    @property
    def count(self) -> int:
        return self._count

    async def wait_idle(self) -> None:
        await self._idle.wait()


#: batches in progress on this path
IN_FLIGHT = InFlight()


class FollowUp:
    """How long a round waits for the fetch that follows the one it got (`drain`); 0: not."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def configure(self, follow_up_ms: int) -> None:
        self.seconds = follow_up_ms / 1000


#: the follow-up wait of this process's drain loop (``WEIR_FETCH_FOLLOW_UP_MS``)
FOLLOW_UP = FollowUp()


#: topics whose batches start first in each round (the merge stages: a window's result waits
#: for them, and a round has more partitions than `WEIR_BATCH_CONCURRENCY` slots)
FIRST: Set[str] = set()


def register(topic: str, handler: Handler, first: bool = False) -> None:
    HANDLERS[topic] = handler
    if first:
        FIRST.add(topic)


async def wait_idle() -> None:
    """Until no batch of this path is in progress (a rebalance first lets them commit)."""
    await IN_FLIGHT.wait_idle()


def queued(topic: str, partition: int) -> bool:
    """True while a fetched batch of the partition waits for a slot or is in hand (not a
    stall: at most ``WEIR_BATCH_CONCURRENCY`` batches of a round run at once)."""
    return TP(topic, partition) in QUEUED


#: per partition, the generation and last offset of the batch last handed to a pipeline
READ_THROUGH: Dict[TP, Tuple[int, int]] = {}


def positions_moved() -> None:
    """The consumer sought: no batch is known to follow on from an earlier one any more."""
    READ_THROUGH.clear()


def as_events(tp: TP, records: List, generation: int) -> ReadBatch:
    """aiokafka records of one partition as Faust-shaped events: the `FetchedRecord`s
    themselves, or `LogEvent`s of other records.

    The client hands a partition's records in offset order, skipping only what a
    read_committed consumer must not see (commit markers, aborted records), so a batch
    that follows the partition's previous one in the same generation, with no seek
    between, covers every offset after that one: the pipeline need not read the
    holes back from the broker (on a transactional input every commit leaves one)."""
    topic, partition = tp.topic, tp.partition
    previous = READ_THROUGH.get(tp)
    covers_from = None
    if previous is not None and previous[0] == generation and previous[1] < records[0].offset:
        covers_from = previous[1] + 1
    READ_THROUGH[tp] = (generation, records[-1].offset)
    if type(records[0]) is FetchedRecord:  # already event-shaped (`app.fetched_records`)
        return ReadBatch(records, covers_from)
    return ReadBatch([LogEvent(topic, partition, r.offset, r.key, r.value) for r in records],
                     covers_from)


async def drain(consumer, fetcher) -> None:
    """The consumer's drain loop with whole partition batches for registered topics."""
    consumer_stopped = consumer._stopped.is_set
    fetcher_stopped = fetcher._stopped.is_set
    while not (consumer_stopped() or fetcher_stopped()):
        records, _ = await consumer._wait_next_records(1.0)
        await consumer.sleep(0)
        if not records or consumer.should_stop:
            continue
        generation = consumer.app.consumer_generation_id
        follow_up_s = FOLLOW_UP.seconds
        if follow_up_s:
            # The client fetched the taken partitions again at once, and that answer holds what
            # arrived since: taken in this round, a record waits about one round, not two.
            more, _ = await consumer._wait_next_records(follow_up_s)
            if consumer.should_stop or consumer.app.consumer_generation_id != generation:
                continue  # a rebalance began: what was fetched is fetched again after its seek
            for tp, batch in (more or {}).items():
                records[tp] = records[tp] + batch if tp in records else batch
        mine = [(tp, batch) for tp, batch in records.items() if batch and tp.topic in HANDLERS]
        if FIRST:
            mine.sort(key=lambda item: item[0].topic not in FIRST)
        QUEUED.update(tp for tp, _ in mine)
        try:
            if consumer.flow_active and consumer.app.consumer_generation_id == generation:
                async with gc_tuning.off_during():  # the round's objects die with it, unwalked
                    await asyncio.gather(*(_handle(consumer, HANDLERS[tp.topic], tp, batch,
                                                   generation) for tp, batch in mine))
        finally:
            QUEUED.difference_update(tp for tp, _ in mine)
        others = {tp: batch for tp, batch in records.items() if tp.topic not in HANDLERS}
        if others:
            await _round_robin(consumer, others, generation)


async def _handle(consumer, handler: Handler, tp: TP, batch: List, generation: int) -> None:
    """One partition's batch, when a slot is free and no rebalance began meanwhile (what
    was fetched is then fetched again after it)."""
    async def work() -> None:
        if not consumer.flow_active or consumer.app.consumer_generation_id != generation:
            return
        try:
            await handler(tp.partition, as_events(tp, batch, generation))
        except Exception:  # the batch aborted: a later batch re-reads it (holes are repaired)
            if tp in consumer.assignment():
                log.exception("%s[%d]: batch of offsets %d..%d failed", tp.topic, tp.partition,
                              batch[0].offset, batch[-1].offset)
            else:
                log.info("%s[%d]: batch dropped, the partition left this worker", tp.topic,
                         tp.partition)
            return
        consumer._read_offset[tp] = batch[-1].offset
        QUEUED.discard(tp)

    await IN_FLIGHT.run(work())


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
