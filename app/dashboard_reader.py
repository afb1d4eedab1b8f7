"""Reads the output topics into a `DashboardState`, on every worker.

Its own aiokafka consumer, ``read_committed`` (only results of committed
transactions), with **no consumer group**: it assigns every partition of every
output topic itself, so each worker's dashboard sees all the results, not
those of its own partitions. A topic it starts on is read from the first
record whose Kafka timestamp is within the history (``offsets_for_times``);
topics that appear later (``fraud-alerts`` when the fraud pipeline is
deployed) and added partitions are picked up by a metadata check every
`RECHECK_S` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, List, Optional

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.clock import wall_clock_ms
from app.dashboard import DashboardState
from app.settings import Settings

log = logging.getLogger(__name__)

RECHECK_S = 10.0
#: the broker answers the reader's fetch once it has this much or this long has passed: the
#: reader wakes about twice a second, not at every commit of the pipelines (its fetches and
#: their parsing share the worker's event loop with the batches)
FETCH_MIN_BYTES = 1024 * 1024
FETCH_MAX_WAIT_MS = 500


def output_topics(settings: Settings) -> Dict[str, str]:
    """Output topic name -> kind of record it carries."""
    return {settings.order_metrics_topic: "orders",
            settings.pageview_metrics_topic: "pageviews",
            settings.user_sessions_topic: "sessions",
            settings.late_events_topic: "late",
            settings.dead_letters_topic: "dead",
            settings.fraud_alerts_topic: "fraud"}


def apply_record(state: DashboardState, kind: str, value: Optional[bytes],
                 timestamp_ms: int) -> None:
    """Feed one output record to the state; records that are not JSON objects are skipped
    (a tombstone, or a producer that is not Weir's)."""
    if value is None:
        return
    try:
        rec = orjson.loads(value)
    except orjson.JSONDecodeError:
        log.debug("dashboard: skipping a record of %s that is not JSON", kind)
        return
    if kind == "fraud":
        state.add_fraud_alert(rec, timestamp_ms)
        return
    if not isinstance(rec, dict):
        return
    try:
        if kind == "orders":
            state.add_order_metrics(rec)
        elif kind == "pageviews":
            state.add_pageview_metrics(rec)
        elif kind == "sessions":
            state.add_user_session(rec)
        elif kind == "late":
            state.add_late_event(rec, timestamp_ms)
        elif kind == "dead":
            state.add_dead_letter(rec, timestamp_ms)
    except (KeyError, TypeError) as exc:
        log.debug("dashboard: skipping a %s record without %s", kind, exc)


class OutputReader:
    """Assigns all partitions of the output topics and folds their records into the state."""

    def __init__(self, servers: str, topics: Dict[str, str], state: DashboardState,
                 client_options: Optional[Dict[str, Any]] = None) -> None:
        self.servers = servers
        self.topics = topics
        self.state = state
        self.client_options = client_options or {}  # TLS/SASL (app.kafka_auth)
        self._consumer: Optional[AIOKafkaConsumer] = None
        self._assigned: List[TopicPartition] = []
        #: next offset per partition, kept across a restart of the consumer (after a broker
        #: error), so no late event, dead letter or alert is counted twice
        self._next: Dict[TopicPartition, int] = {}

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.servers, group_id=None, enable_auto_commit=False,
            isolation_level="read_committed", auto_offset_reset="latest",
            fetch_min_bytes=FETCH_MIN_BYTES, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            **self.client_options)
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        self._assigned = []

    async def run(self) -> None:
        """Read forever: fold records in, re-check the topics every `RECHECK_S`."""
        loop = asyncio.get_running_loop()
        next_check = 0.0
        while True:
            if loop.time() >= next_check:
                await self.refresh_assignment()
                next_check = loop.time() + RECHECK_S
            if not self._assigned:
                await asyncio.sleep(1.0)
                continue
            await self.poll()

    async def poll(self, timeout_ms: int = 500) -> int:
        """One fetch: fold the records into the state; return how many there were."""
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=5000)
        n = 0
        for tp, records in batches.items():
            kind = self.topics[tp.topic]
            for record in records:
                apply_record(self.state, kind, record.value, record.timestamp)
            if records:
                self._next[tp] = records[-1].offset + 1
            n += len(records)
        return n

    async def refresh_assignment(self) -> None:
        """Assign the partitions of the output topics that exist; new ones start at the
        history's beginning, those already assigned keep their position."""
        assert self._consumer is not None
        # a fresh metadata fetch: the client's own metadata covers only assigned topics
        cluster = await self._consumer._client.fetch_all_metadata()
        wanted = sorted(
            TopicPartition(topic, p) for topic in self.topics
            for p in (cluster.partitions_for_topic(topic) or ()))
        new = [tp for tp in wanted if tp not in self._assigned]
        if not new:
            return
        for tp in self._assigned:
            self._next[tp] = await self._consumer.position(tp)
        self._consumer.assign(wanted)
        for tp in wanted:
            if tp in self._next:
                self._consumer.seek(tp, self._next[tp])
        fresh = [tp for tp in new if tp not in self._next]
        if fresh:
            # log ends asked first: a record written after this query is recent, so "no
            # record that recent" means start at this end, not at a later one (that would
            # skip records written in between)
            ends = await self._consumer.end_offsets(fresh)
            since = wall_clock_ms() - self.state.history_ms
            found = await self._consumer.offsets_for_times({tp: since for tp in fresh})
            for tp in fresh:
                at = found.get(tp)
                self._consumer.seek(tp, ends[tp] if at is None else at.offset)
        self._assigned = wanted
        log.info("Dashboard: reading %s", ", ".join(sorted({tp.topic for tp in new})))
