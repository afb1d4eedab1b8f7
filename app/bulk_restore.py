"""Table recovery in bulk: the active changelog partitions read in large fetches first.

Faust restores a table record by record: each changelog record becomes an
`Event`, crosses the consumer's delivery loop and a queue, and its recovery
loop checks after every record whether recovery is over (about 5,000 records
a second here: 200 s for a table of 1,000,000 keys). Under ``exactly_once``
it also never reaches the end on its own: the last offset of a transactional
changelog is a commit marker, no record ever arrives there, and Faust waits
two 5 s timeouts before it concludes that the rest is "aborted". Every
restart and rebalance paused processing that long.

`BulkRestoringRecovery` keeps Faust's recovery (highwaters, offsets, standbys,
the consumer's pauses and seeks) and adds one step: once Faust knows where each
active changelog partition starts and ends, a plain consumer with the app's
isolation level reads those ranges in fetches of thousands of records and
writes them to the tables' stores in write batches (the store records each
partition's persisted offset as Faust's own restore does). Having read up to
the end, the partition is recovered through its highwater: what is left below
it are markers and aborted records. Faust then finds nothing to read.
``WEIR_BULK_RESTORE=false`` leaves recovery to Faust alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Counter, Dict, Mapping, Optional, Set

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.tables.manager import TableManager
from faust.tables.recovery import RebalanceAgain, Recovery
from faust.types import TP

log = logging.getLogger(__name__)

#: records per write batch (and at most per fetch round)
CHUNK_RECORDS = 20_000
PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True)
class ChangelogMessage:
    """What a store's ``apply_changelog_batch`` reads of a Faust message."""

    tp: TP
    offset: int
    key: Optional[bytes]
    value: Optional[bytes]

    @property
    def partition(self) -> int:
        return self.tp.partition


@dataclass(frozen=True)
class ChangelogRecord:
    """Stands for a Faust `Event` in ``apply_changelog_batch``: only ``message`` is read."""

    message: ChangelogMessage


class BulkRestorer:
    """Reads changelog partitions from a start offset through a last offset into tables."""

    def __init__(self, servers: str, isolation_level: str,
                 client_options: Optional[Dict[str, Any]] = None,
                 chunk_records: int = CHUNK_RECORDS,
                 say: Callable[[str], None] = log.info) -> None:
        self.servers = servers
        self.isolation_level = isolation_level
        self.client_options = client_options or {}
        self.chunk_records = chunk_records
        self.say = say

    async def restore(self, tables: Mapping[TP, Any], first: Mapping[TP, int],
                      last: Mapping[TP, int], time_limit_s: float = 3600.0) -> Dict[TP, int]:
        """Apply the records ``first[tp]..last[tp]`` of each partition to ``tables[tp]``
        (anything with ``apply_changelog_batch``), for at most ``time_limit_s``; returns the
        offset each partition was read through (``last[tp]`` when done, ``first[tp] - 1``
        when nothing was read)."""
        todo = {tp: first[tp] for tp in first if first[tp] <= last[tp]}
        read_through: Dict[TP, int] = {tp: first[tp] - 1 for tp in first}
        applied: Dict[TP, int] = {tp: 0 for tp in todo}
        if not todo or time_limit_s <= 0:
            return read_through
        total = sum(last[tp] - first[tp] + 1 for tp in todo)
        self.say(f"Bulk restore: up to {total:,} changelog records in {len(todo)} partitions")
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.servers, group_id=None, enable_auto_commit=False,
            isolation_level=self.isolation_level, auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
            **self.client_options)
        await consumer.start()
        started = last_report = time.monotonic()
        try:
            kafka_tps = {tp: TopicPartition(tp.topic, tp.partition) for tp in todo}
            consumer.assign(list(kafka_tps.values()))
            for tp, offset in todo.items():
                consumer.seek(kafka_tps[tp], offset)
            pending: Set[TP] = set(todo)
            while pending and time.monotonic() - started < time_limit_s:
                fetched = await consumer.getmany(*[kafka_tps[tp] for tp in pending],
                                                 timeout_ms=500, max_records=self.chunk_records)
                for ktp, records in fetched.items():
                    tp = TP(ktp.topic, ktp.partition)
                    batch = [ChangelogRecord(ChangelogMessage(tp, r.offset, r.key, r.value))
                             for r in records if r.offset <= last[tp]]
                    if batch:
                        tables[tp].apply_changelog_batch(batch)
                        applied[tp] += len(batch)
                for tp in list(pending):
                    position = await consumer.position(kafka_tps[tp])
                    read_through[tp] = min(position - 1, last[tp])
                    if position > last[tp]:
                        pending.discard(tp)
                now = time.monotonic()
                if now - last_report >= PROGRESS_EVERY_S:
                    last_report = now
                    done = sum(applied.values())
                    self.say(f"Bulk restore: {done:,} records applied in {now - started:.0f} s "
                             f"({done / (now - started):,.0f}/s), {len(pending)} partitions to go")
        finally:
            await consumer.stop()
        elapsed = time.monotonic() - started
        done = sum(applied.values())
        left = f"; {len(pending)} partitions left to Faust's recovery" if pending else ""
        self.say(f"Bulk restore: {done:,} records in {elapsed:.1f} s "
                 f"({done / max(elapsed, 1e-6):,.0f}/s){left}")
        return read_through


class BulkRestoringRecovery(Recovery):
    """Faust's recovery, with the active partitions restored in bulk before Faust reads on."""

    restorer: Optional[BulkRestorer] = None

    async def _build_offsets(self, consumer: Any, tps: Set[TP], destination: Counter[TP],
                             title: str) -> None:
        if title == "active":  # with or without the bulk step: Faust's own reading too
            self._start_from_persisted(tps, destination)
        await super()._build_offsets(consumer, tps, destination, title)
        if title != "active" or not tps or self.restorer is None:
            return
        highwaters = self.active_highwaters
        # Faust's offsets are the last offset applied (-1: none); its highwaters the last
        # offset below the log end (the last stable offset under read_committed)
        first = {tp: destination[tp] + 1 for tp in tps
                 if highwaters.get(tp) is not None and destination[tp] is not None}
        last = {tp: highwaters[tp] for tp in first}
        # Faust gives this step broker_request_timeout, then stops its recovery service:
        # what is not read by half of it is left to Faust's own reading
        limit_s = float(self.app.conf.broker_request_timeout) / 2
        read_through = await self.restorer.restore(
            {tp: self.tp_to_table[tp] for tp in first}, first, last, limit_s)
        for tp, offset in read_through.items():
            destination[tp] = max(destination[tp], offset)

    async def _seek_offsets(self, consumer: Any, tps: Set[TP], offsets: Counter[TP],
                            title: str) -> None:
        """Seek, unless a rebalance came after this pass built its offsets.

        A rebalance refills the offsets of the pass in progress (`on_rebalance`: a newly
        assigned partition with nothing persisted gets None) and sets
        `signal_recovery_start` in the same step, with no wait between; Faust looks at that
        signal only around its waits, so a pass that went on to seek its standby
        partitions could seek one to None. aiokafka refused it ("Offset must be a positive
        integer"), the error passed Faust's wait before the signal did, and the recovery
        crashed the worker (seen once after a kill -9 and a join close together). The pass
        starts over instead, with offsets built for the new assignment."""
        if self.signal_recovery_start.is_set():
            raise RebalanceAgain()
        await super()._seek_offsets(consumer, tps, offsets, title)

    def _start_from_persisted(self, tps: Set[TP], destination: Counter[TP]) -> None:
        """Each active partition is read from the offset its store says it holds.

        Faust keeps, between rebalances, the offset each active changelog partition was read
        through, and its changelog reader, a background task, moves that offset to the
        highwater whenever the consumer's position on the partition has reached it ("Aborted
        tx until highwater"). That check ran between a rebalance's new highwaters and its
        offsets, with the position of the new assignment, and a worker then skipped the
        changelog records of a partition it kept (the records of its last transaction, which
        its local database did not hold: its state came back without them). The store's
        persisted offset is what a restore (Faust's, or this one) last applied; reading on
        from there, in order, through the highwater gives the committed state whatever the
        local database holds beyond it."""
        for tp in tps:
            table = self.tp_to_table.get(tp)
            destination[tp] = None if table is None else table.persisted_offset(tp)


class BulkRestoringTableManager(TableManager):
    """Faust's table manager with `BulkRestoringRecovery` as its recovery service."""

    restorer: Optional[BulkRestorer] = None

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            recovery = BulkRestoringRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
            recovery.restorer = type(self).restorer
            self._recovery = recovery
        return self._recovery


def table_manager(restorer: Optional[BulkRestorer]) -> type:
    """The table manager class for ``faust.App(TableManager=...)``."""
    return type("WeirTableManager", (BulkRestoringTableManager,), {"restorer": restorer})
