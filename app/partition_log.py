"""Every record of a source partition, once, in offset order: whatever Faust's stream delivers.

Around a rebalance or the seek that follows table recovery, Faust's stream can
hand an agent events out of order, twice, or not at all (prefetched events
from before the seek, buffers cleared by flow control: faust-streaming issues
#216, #221, #236; seen here as a batch ``282..201`` and a partition that went
``0..81`` then ``125..300``). The engines fold events in offset order from the
state's next offset, so `PartitionLog.contiguous` checks each partition batch
against that offset: a batch that starts there and has no holes is used as
is; otherwise the partition's records from the state's next offset to the
batch's last are read again straight from the broker, with the isolation level
of the app (offsets without a record there are transaction markers or aborted
records, not losses). On the usual path (no seek, no transactions on the
input) this costs nothing; on a transactional input, such as the internal
partials topics, every commit marker leaves a hole, so each batch is re-read.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faust.types import TP

from tables.errors import WeirError

log = logging.getLogger(__name__)
#: A read waits behind the fetch its client already has in flight; one at a partition's end
#: is held by the broker this long (aiokafka's default, 500 ms, was seen in a read's time).
READ_FETCH_MAX_WAIT_MS = 20


class LogEvent:
    """A record read from the broker, shaped like a Faust event: ``event.value`` and
    ``event.message.topic/partition/offset/key/tp``. It is its own message: one small
    object per record, since the direct path builds one for every record it hands on."""

    __slots__ = ("topic", "partition", "offset", "key", "value")

    def __init__(self, topic: str, partition: int, offset: int, key: Optional[bytes],
                 value: Any) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value

    @property
    def message(self) -> "LogEvent":
        return self

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)

    def _fields(self) -> Tuple[Any, ...]:
        return (self.topic, self.partition, self.offset, self.key, self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LogEvent) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields()[:3])

    def __repr__(self) -> str:
        return f"LogEvent({self.topic}[{self.partition}]@{self.offset}, key={self.key!r})"


class ReadBatch(list):
    """Records of one partition as the consumer read them, in offset order, with
    ``covers_from``: the offset from which every offset up to the last one is either in
    the batch or holds no record for this consumer (a transaction's commit marker, an
    aborted record under read_committed), or None when that is not known."""

    def __init__(self, events: Sequence[Any], covers_from: Optional[int]) -> None:
        super().__init__(events)
        self.covers_from = covers_from


class PartitionLog:
    """Reads partitions back from the broker when Faust's stream has holes or disorder."""

    def __init__(self, servers: str, isolation_level: str, timeout_s: float = 60.0,
                 client_options: Optional[Dict[str, Any]] = None) -> None:
        self.servers = servers
        self.client_options = client_options or {}
        self.isolation_level = isolation_level
        self.timeout_s = timeout_s
        self._consumer: Optional[AIOKafkaConsumer] = None
        self._lock = asyncio.Lock()
        self.rereads = 0

    async def contiguous(self, events: Sequence[Any], next_offset: int,
                         decode: Callable[[Optional[bytes]], Any] = lambda raw: raw) -> List[Any]:
        """The records of one partition from ``next_offset`` through the batch's last offset.

        ``events`` are Faust events of one partition; ``decode`` turns raw bytes
        into what Faust's value serializer would have given. A `ReadBatch` whose holes
        are known to hold no records from ``next_offset`` on is used as it is.
        """
        fresh = [e for e in events if e.message.offset >= next_offset]
        if not fresh:
            return []
        offsets = [e.message.offset for e in fresh]
        if offsets == list(range(next_offset, next_offset + len(offsets))):
            return fresh
        covers_from = getattr(events, "covers_from", None)
        if (covers_from is not None and covers_from <= next_offset
                and all(a < b for a, b in zip(offsets, offsets[1:]))):
            return fresh  # the holes are commit markers or aborted records (`ReadBatch`)
        last = max(offsets)
        first = fresh[0].message
        log.debug("%s[%d]: batch has offsets %d..%d (%d events) but the state expects %d next; "
                 "reading %d..%d from the broker", first.topic, first.partition, offsets[0],
                 offsets[-1], len(offsets), next_offset, next_offset, last)
        return await self.read(first.topic, first.partition, next_offset, last, decode)

    async def read(self, topic: str, partition: int, start: int, last: int,
                   decode: Callable[[Optional[bytes]], Any]) -> List[LogEvent]:
        """Records ``start..last`` (both inclusive) of the partition, as the app would see them."""
        async with self._lock:
            consumer = await self._started()
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.resume(tp)
            consumer.seek(tp, start)
            records: List[LogEvent] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.timeout_s
            while await consumer.position(tp) <= last:
                if loop.time() > deadline:
                    raise WeirError(f"{topic}[{partition}]: could not read offsets {start}..{last} "
                                    f"within {self.timeout_s:.0f} s")
                batch = await consumer.getmany(tp, timeout_ms=500)
                for msg in batch.get(tp, []):
                    if start <= msg.offset <= last:
                        records.append(LogEvent(topic, partition, msg.offset, msg.key,
                                                decode(msg.value)))
            consumer.pause(tp)  # no fetch left waiting at the log end for the next read
            self.rereads += 1
            return records

    async def end_offsets(self, topic: str, partitions: Sequence[int]) -> Dict[int, int]:
        """Log end of each partition (the last stable offset under read_committed)."""
        return await self._offsets(topic, partitions, "end_offsets")

    async def start_offsets(self, topic: str, partitions: Sequence[int]) -> Dict[int, int]:
        """Log start of each partition: the lowest offset retention has left."""
        return await self._offsets(topic, partitions, "beginning_offsets")

    async def _offsets(self, topic: str, partitions: Sequence[int], which: str) -> Dict[int, int]:
        async with self._lock:
            consumer = await self._started()
            tps = [TopicPartition(topic, p) for p in partitions]
            found = await getattr(consumer, which)(tps)
            return {tp.partition: offset for tp, offset in found.items()}

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.servers, group_id=None, enable_auto_commit=False,
                isolation_level=self.isolation_level, auto_offset_reset="earliest",
                fetch_max_wait_ms=READ_FETCH_MAX_WAIT_MS, **self.client_options)
            try:
                await consumer.start()
            except BaseException:  # kept only once started: the next call tries again
                await consumer.stop()
                raise
            self._consumer = consumer
        return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


class PartitionLocks:
    """One lock per source partition: Faust's batches and catch-up reads never interleave."""

    def __init__(self) -> None:
        self._locks: Dict[int, asyncio.Lock] = {}

    def __call__(self, partition: int) -> asyncio.Lock:
        return self._locks.setdefault(partition, asyncio.Lock())


class StallWatch:
    """Catches up partitions that Faust's stream stopped delivering.

    After some rebalances Faust's stream delivers nothing more from a partition
    although the log holds records past the state's next offset (prefetched
    events dropped around the seek that follows recovery). Every check, each
    assigned partition that is behind its log end and has made no progress for
    ``stall_s`` is read from the broker and processed like a batch; whatever
    Faust delivers later is skipped as a replay. A partition whose fetched batch
    waits for its turn in the direct path's drain round (``queued``) is not
    stalled: reading it again would only add work to a busy worker.
    """

    def __init__(self, app: Any, topic: str, partition_log: PartitionLog,
                 next_offset: Callable[[int], int],
                 process: Callable[[int, Sequence[Any]], Awaitable[None]],
                 decode: Callable[[Optional[bytes]], Any] = lambda raw: raw,
                 stall_s: float = 5.0,
                 report_lag: Callable[[Dict[int, int]], None] = lambda lags: None,
                 queued: Callable[[int], bool] = lambda partition: False) -> None:
        self.app = app
        self.topic = topic
        self.partition_log = partition_log
        self.next_offset = next_offset
        self.process = process
        self.decode = decode
        self.stall_s = stall_s
        self.report_lag = report_lag  # partition -> records behind the log end, every check
        self.queued = queued  # partition -> a fetched batch of it waits its turn: not stalled
        self._seen: Dict[int, Tuple[int, float]] = {}  # partition -> (next offset, since when)
        self._clean: Dict[int, int] = {}  # partition -> a log end with no records past the state

    def _ready(self) -> bool:
        recovery = self.app.tables.recovery
        return recovery.completed.is_set() and not recovery.in_recovery and not self.app.rebalancing

    def _owned(self) -> List[int]:
        """The partitions of the topic this worker owns as an active now (none while a
        rebalance or a recovery is under way)."""
        if not self._ready():
            return []
        assignor = self.app.assignor
        return sorted(tp.partition for tp in self.app.consumer.assignment()
                      if tp.topic == self.topic and not assignor.is_standby(tp))

    async def check(self) -> None:
        try:
            await self._check()
        except (KafkaError, WeirError) as exc:  # the broker away: the next check tries again
            log.warning("%s: stall check failed (%r); next one in a moment", self.topic, exc)

    async def _check(self) -> None:
        partitions = self._owned()
        if not partitions:
            if self._ready():
                self.report_lag({})
            return
        ends = await self.partition_log.end_offsets(self.topic, partitions)
        # A rebalance may have run during each await: a partition that left is not touched
        # (reading its state would load it again into the engine, stale, as if still owned).
        partitions = [p for p in self._owned() if p in ends]
        self.report_lag({p: self._lag(p, ends[p]) for p in partitions})
        now = asyncio.get_running_loop().time()
        for partition in partitions:
            if partition not in self._owned():
                continue
            nxt, end = self.next_offset(partition), ends[partition]
            seen = self._seen.get(partition)
            if seen is None or seen[0] != nxt or self.queued(partition):
                self._seen[partition] = (nxt, now)
                continue
            if nxt >= end or now - seen[1] < self.stall_s or self._clean.get(partition) == end:
                continue
            events = await self.partition_log.read(self.topic, partition, nxt, end - 1,
                                                   self.decode)
            if partition not in self._owned() or self.next_offset(partition) != nxt:
                continue  # moved, or delivered meanwhile: the next check looks again
            if not events:  # only transaction markers or aborted records up to the end
                self._clean[partition] = end
                continue
            log.warning("%s[%d]: no progress for %.0f s at offset %d, log end %d: processing "
                        "%d records read from the broker", self.topic, partition,
                        now - seen[1], nxt, end, len(events))
            await self.process(partition, events)
            self._seen[partition] = (self.next_offset(partition), now)

    def _lag(self, partition: int, end: int) -> int:
        """Records between the state's next offset and the log end (0 when only transaction
        markers or aborted records are left)."""
        if self._clean.get(partition) == end:
            return 0
        return max(0, end - self.next_offset(partition))
