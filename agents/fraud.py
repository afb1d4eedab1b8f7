"""Fraud detection: transactions -> dedup -> rules in event time, per user -> fraud-alerts.

With ``WEIR_FRAUD_REPARTITION=true`` a first stage forwards every valid
transaction, keyed by ``userId``, to the internal topic
``<app id>-fraud-by-user`` (in the transaction that commits its input
offsets), and the rules below read that topic instead of ``transactions``:
each user's state then lives in one partition whatever the producer's key.
Otherwise the rules read ``transactions`` directly and producers must key by
``userId`` (transactions keyed otherwise are counted in the progress log).

Per source partition of the rules, in offset order: decode (malformed and future ones go to
``dead-letters``); drop a ``transactionId`` seen before (dedup, `tables.dedup`: remembered
for at least ``WEIR_FRAUD_DEDUP_TTL_MS`` of event time, at most 1 s more); ``LARGE_AMOUNT`` at once; then, under the
partition's watermark (highest transaction time minus
``WEIR_FRAUD_MAX_OUT_OF_ORDERNESS_MS``), a late transaction
(``timestamp < watermark``) goes to ``late-events`` and takes no part in the
stateful rules; the others wait in per-user buffers (`tables.ordered`) until
the watermark passes them and are then evaluated in ``(timestamp,
transactionId)`` order by `agents.fraud_rules` (``HIGH_FREQUENCY``,
``IMPOSSIBLE_TRAVEL``), so the alerts do not depend on arrival order when
nothing is late. Alerts go to ``fraud-alerts`` keyed by ``userId``.

State (three Faust tables co-partitioned with the input, changelogs
included): the partition's clock and where its buffered transactions start in
the source (``fraud-pending``: the buffers themselves are read again from the
source after a restart, `replay_buffers`), the
seen ids (``fraud-dedup``, one entry per batch and 1 s bucket) and the per-user
rule state (``fraud-users``, written once per user and batch), both expiring in
event time with tombstones. A batch's alerts, side outputs,
changelog records and input offsets commit in one transaction (`Sink`); a batch that raised
an alert commits at its end, not at the commit interval, since readers wait for alerts.

The watermark, lateness and the late events' ``sourceTopic``/``sourceOffset``
are those of the topic the rules read (``fraud-by-user`` when repartitioning).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, Dict, List, Sequence

from faust.types import TP, EventT

from operator import itemgetter

from agents.fraud_rules import ID, TS, Alert, FraudRules, load_transaction, load_user_state
from app import direct_batches
from app.clock import wall_clock_ms
from app.faust_app import app, partition_log, settings
from app.metrics import count_fraud_alert
from app.models import BadEvent, FraudAlert, Transaction, decode_transaction
from app.partition_log import PartitionLocks, StallWatch
from app.sinks import Sender, Sink, future_timestamp, send_dead_letter, send_late_event
from app.topics import register_repartition_topic, register_table
from app.windowed import check_watches, consume_in_batches, progress_line, run_tick
from tables.dedup import SeenIds
from tables.engine import Item, named_tuple_from
from tables.faust_store import FaustTableStore
from tables.ordered import OrderedRelease, ReleaseResult
from tables.state import SourceOffsets
from tables.ttl import TtlState

PIPELINE = "fraud"
VIEW = "fraud-rules"
log = logging.getLogger(__name__)

for _table in ("fraud-pending", "fraud-dedup", "fraud-users"):
    register_table(_table, per_input=True)
transactions_topic = app.topic(settings.transactions_topic, key_type=bytes, value_type=bytes,
                               key_serializer="raw", value_serializer="raw")
REPARTITION = settings.fraud_repartition == "true"
if REPARTITION:
    register_repartition_topic("fraud-by-user")
    register_table("fraud-forwarded", per_input=True)
    by_user_topic = app.topic(settings.topic_name("fraud-by-user"), key_type=bytes,
                              value_type=bytes, key_serializer="raw", value_serializer="raw",
                              partitions=settings.input_partitions)
    forwarded_store = FaustTableStore(app.Table("fraud-forwarded",
                                                partitions=settings.input_partitions))
    forwarded = SourceOffsets(forwarded_store)
rules_topic = by_user_topic if REPARTITION else transactions_topic
RULES_SOURCE = rules_topic.get_topic_name()
sink = Sink(app, PIPELINE, forget=lambda tp: forget(tp))  # forget: defined below
FORWARD_BATCH_EVENTS = 100  # see repartition_transactions
REPLAY_CHUNK = 50_000  # source offsets read at a time to rebuild a partition's buffers
limits = settings.input_limits
locks = PartitionLocks()
forward_locks = PartitionLocks()

pending_store = FaustTableStore(app.Table("fraud-pending", partitions=settings.input_partitions))
dedup_store = FaustTableStore(app.Table("fraud-dedup", partitions=settings.input_partitions))
users_store = FaustTableStore(app.Table("fraud-users", partitions=settings.input_partitions))
STORES = (pending_store, dedup_store, users_store)
ordered = OrderedRelease(settings.fraud_max_out_of_orderness_ms, pending_store,
                         tie=itemgetter(ID), load_value=load_transaction)
seen_ids = SeenIds(settings.fraud_dedup_ttl_ms, dedup_store, setting="WEIR_FRAUD_DEDUP_TTL_MS")
users = TtlState(settings.fraud_state_ttl_ms, users_store, setting="WEIR_FRAUD_STATE_TTL_MS",
                 load_value=load_user_state)
rules = FraudRules(settings.fraud_large_amount, settings.fraud_frequency_window_ms,
                   settings.fraud_frequency_max, settings.fraud_max_speed_kmh,
                   settings.fraud_travel_window_ms)
counters: Dict[str, int] = defaultdict(int)


if REPARTITION:
    @app.agent(transactions_topic)
    async def fraud_repartition(stream):
        """Forward transactions keyed by userId to the rules' topic; bad ones to dead letters."""
        # Faust's delivery interleaves the source partitions message by message, and small
        # batches keep them interleaved in the by-user topic, where lateness is decided (whole
        # partition batches would make a backlog's later partitions look late).
        await consume_in_batches(stream, settings, forward_transactions, direct=False,
                                 max_events=FORWARD_BATCH_EVENTS, forget=forget)


async def forward_transactions(partition: int, events: Sequence[EventT]) -> None:
    async with forward_locks(partition):
        await _forward_transactions(partition, events)


async def _forward_transactions(partition: int, events: Sequence[EventT]) -> None:
    clock = forwarded.clock(partition)
    anchor = events[-1]
    events = await partition_log.contiguous(events, clock.next_offset)
    if not events:
        return
    async with sink.batch(TP(settings.transactions_topic, partition)) as out:
        horizon_ms = wall_clock_ms() + settings.max_future_skew_ms
        for event in events:
            if clock.is_replay(event.message.offset):
                continue
            try:
                tx = decode_in_time(event.value, horizon_ms)
            except BadEvent as exc:
                await dead_letter(out, exc, event)
                continue
            # partitioned by the key, as the default partitioner does
            await out.send(RULES_SOURCE, tx.user_id.encode(), event.value)
        clock.advance_to(events[-1].message.offset + 1)
        forwarded_store.bind(anchor)
        forwarded.save(partition)
        await forwarded_store.flush_changelog(out, partition)
        out.consumed(anchor.message.tp, events[-1].message.offset + 1, events=len(events))


def decode_in_time(raw: bytes, horizon_ms: int) -> Transaction:
    """The decoded transaction; `BadEvent` if malformed or too far in the future (it must
    not drag the watermark forward)."""
    tx = decode_transaction(raw, limits)
    if tx.timestamp > horizon_ms:
        raise future_timestamp(tx.timestamp, settings.max_future_skew_ms)
    return tx


async def dead_letter(out: Sender, exc: BadEvent, event: EventT) -> None:
    await send_dead_letter(out, settings.dead_letters_topic, PIPELINE, exc, event,
                           settings.max_event_bytes)


@app.agent(rules_topic)
async def fraud_detection(stream):
    """Consume transactions in batches; each batch is split by source partition."""
    # With repartitioning, both stages share the worker's drain loop; on the direct path the
    # rules stage was seen stalling there (caught up only by the stall watch), so it keeps
    # Faust's delivery then. Not yet understood: see the README (fraud, known limits).
    await consume_in_batches(stream, settings, process_transactions,
                             direct=settings.fraud_repartition != "true", forget=forget)


async def process_transactions(partition: int, events: Sequence[EventT]) -> None:
    async with locks(partition):  # Faust's batches and catch-up reads, one at a time
        await _process_transactions(partition, events)


async def _process_transactions(partition: int, events: Sequence[EventT]) -> None:
    await replay_buffers(partition)
    clock = ordered.clock(partition)
    anchor = events[-1]
    events = await partition_log.contiguous(events, clock.next_offset)
    if not events:
        return
    async with sink.batch(TP(RULES_SOURCE, partition)) as out:
        # decode and dedup; bad input -> dead letters; LARGE_AMOUNT on arrival
        items: List[Item[EventT]] = []
        dropped: List[int] = []  # offsets of records that did not reach the rules
        horizon_ms = wall_clock_ms() + settings.max_future_skew_ms
        first_new = clock.next_offset  # before it: an earlier run folded it in already
        for event in events:
            message = event.message
            if message.offset < first_new:
                continue
            try:
                tx = decode_in_time(event.value, horizon_ms)
            except BadEvent as exc:
                await dead_letter(out, exc, event)
                dropped.append(message.offset)
                continue
            if message.key != tx.user_id.encode():
                if not counters["keyed_not_by_user"]:
                    log.warning("fraud: %s[%d]@%d is keyed %r, not by its userId %r: the rules "
                                "see each partition's users apart (set WEIR_FRAUD_REPARTITION=true "
                                "for such producers)", message.topic, partition,
                                message.offset, message.key, tx.user_id)
                counters["keyed_not_by_user"] += 1
            if not seen_ids.first_delivery(partition, tx.transaction_id, tx.timestamp):
                counters["duplicates"] += 1
                dropped.append(message.offset)
                continue
            item = rules_item(tx, event)
            large = rules.large_amount_alert(item.value)
            if large:
                await send_alert(out, large)
            items.append(item)
        # rules: late ones aside, the others in event-time order once the watermark passes them
        for store in STORES:
            store.bind(anchor)
        result = ordered.process(partition, items, next_offset=events[-1].message.offset + 1,
                                 now_ms=wall_clock_ms(), dropped=dropped)
        for late in result.late:
            counters["late"] += 1
            await send_late_event(out, settings.late_events_topic, PIPELINE, VIEW, late)
        # sink: alerts, then the state of the batch
        await evaluate_and_publish(out, partition, result)
        out.consumed(anchor.message.tp, events[-1].message.offset + 1, events=len(events))


def rules_item(tx: Transaction, event: Any) -> Item[Any]:
    """The ordered rules' item of a decoded transaction: its value is the rules' transaction
    (`agents.fraud_rules.Tx`), its key the user."""
    value = (tx.transaction_id, tx.user_id, tx.amount, tx.location, tx.timestamp, tx.lat, tx.lon)
    return named_tuple_from(Item, (event.message.offset, tx.timestamp, value, event, tx.user_id))


async def replay_buffers(partition: int) -> None:
    """After the partition's state is loaded: its buffered transactions again, read from the
    source (`tables.ordered`: only the buffers' meta is stored), `REPLAY_CHUNK` offsets at a
    time."""
    span = ordered.replay_span(partition)
    if span is None:
        return
    start, end = span
    first = (await partition_log.start_offsets(RULES_SOURCE, [partition]))[partition]
    if first > start:
        log.error("fraud: %s[%d] offsets %d..%d are gone (retention): the transactions among "
                  "them that waited for the watermark are lost", RULES_SOURCE, partition, start,
                  first - 1)
    buffered = 0
    for lo in range(max(start, first), end, REPLAY_CHUNK) or [end]:
        hi = min(lo + REPLAY_CHUNK, end)
        if end - start > REPLAY_CHUNK:
            log.info("fraud: %s[%d] replaying offsets %d..%d of %d..%d", RULES_SOURCE, partition,
                     lo, hi - 1, start, end - 1)
        items = []
        for record in await partition_log.read(RULES_SOURCE, partition, lo, hi - 1,
                                               lambda raw: raw) if lo < hi else []:
            try:
                items.append(rules_item(decode_transaction(record.value, limits), record))
            except BadEvent:
                continue  # a dead letter then: among the dropped offsets
        buffered += ordered.replay(partition, items, span, final=hi >= end)
    log.info("fraud: %s[%d] buffers rebuilt from offsets %d..%d: %d transactions wait for the "
             "watermark", RULES_SOURCE, partition, start, end - 1, buffered)


async def evaluate_and_publish(out: Sender, partition: int, result: ReleaseResult) -> None:
    """Run the ordered rules on the released transactions, expire old state, send it all."""
    # per user its transaction, or a list once it has several: most users have one in a
    # batch, and a list each lived (and was walked by the garbage collector) until its end
    by_user: Dict[str, Any] = {}
    for r in result.released:
        held = by_user.get(r.key)
        if held is None:
            by_user[r.key] = r.value
        elif type(held) is list:
            held.append(r.value)
        else:
            by_user[r.key] = [held, r.value]
    states = users.view(partition)
    for user, held in by_user.items():
        txs = held if type(held) is list else (held,)  # a transaction is a tuple
        state, alerts = rules.evaluate(states.get(user), txs)
        states.put(user, state, txs[-1][TS])
        for alert in alerts:
            await send_alert(out, alert)
    counters["evaluated"] += len(result.released)
    seen_ids.expire(partition, result.watermark_ms)
    users.expire(partition, result.watermark_ms)
    seen_ids.flush(partition, tag=ordered.clock(partition).next_offset)
    users.flush(partition)
    for store in STORES:
        await store.flush_changelog(out, partition)


async def send_alert(out: Sender, alert: Alert) -> None:
    counters[alert["type"]] += 1
    out.commit_at_end()  # readers wait for it: visible at this batch's commit
    record = FraudAlert(detectedAt=wall_clock_ms(), **alert)
    await out.send(settings.fraud_alerts_topic, alert["userId"].encode(), record.asdict())
    count_fraud_alert(alert["type"], out)


@app.timer(interval=1.0)
async def fraud_idle_tick() -> None:
    """Idle partitions: event time follows the wall clock, so buffered transactions go out."""
    async def tick() -> None:
        now_ms = wall_clock_ms()
        for partition in ordered.partitions():
            if not pending_store.is_bound(partition) or ordered.replay_span(partition):
                continue  # no batch of it on this worker yet (or since a load): nothing to do
            async with locks(partition):
                async with sink.batch(TP(RULES_SOURCE, partition)) as out:
                    result = ordered.advance_idle(partition, now_ms, settings.idle_timeout_ms)
                    if result.watermark_ms is not None:
                        await evaluate_and_publish(out, partition, result)

    if settings.idle_advance == "true":
        await run_tick(PIPELINE, tick, forget_all)


@app.task
async def fraud_announce() -> None:
    log.info("fraud: rules read %s%s; watermark delay %d ms; LARGE_AMOUNT > %g, HIGH_FREQUENCY "
             "> %d in %d ms, IMPOSSIBLE_TRAVEL > %g km/h or another place within %d ms",
             RULES_SOURCE, f" (re-keyed by userId from {settings.transactions_topic})"
             if REPARTITION else "", settings.fraud_max_out_of_orderness_ms,
             settings.fraud_large_amount, settings.fraud_frequency_max,
             settings.fraud_frequency_window_ms, settings.fraud_max_speed_kmh,
             settings.fraud_travel_window_ms)


@app.timer(interval=10.0)
async def fraud_progress() -> None:
    line = await progress_line(PIPELINE, ordered, app, RULES_SOURCE)
    buffered = sum(ordered.buffered(p) for p in ordered.partitions())
    log.info("%s; %d buffered; %s", line, buffered,
             ", ".join(f"{k} {v}" for k, v in sorted(counters.items())) or "no transaction yet")


watches = [StallWatch(app, RULES_SOURCE, partition_log, lambda p: ordered.clock(p).next_offset,
                      process_transactions,
                      queued=lambda p: direct_batches.queued(RULES_SOURCE, p))]
if REPARTITION:
    watches.append(StallWatch(app, settings.transactions_topic, partition_log,
                              lambda p: forwarded.clock(p).next_offset, forward_transactions))


@app.timer(interval=2.0)
async def fraud_stall_watch() -> None:
    """Partitions Faust's stream stopped delivering are read from the broker."""
    await check_watches(watches, PIPELINE, forget_all)


def forget(tp: TP) -> None:
    """Drop what this worker holds in memory of a partition (revoked, or its batch failed);
    it is loaded again from the tables if the partition is processed here again."""
    if tp.topic == RULES_SOURCE:
        for cache in (ordered, seen_ids, users):
            cache.forget(tp.partition)
        for store in STORES:
            store.forget(tp.partition)
    if REPARTITION and tp.topic == settings.transactions_topic:
        forwarded.forget(tp.partition)
        forwarded_store.forget(tp.partition)


def forget_all() -> None:
    for partition in ordered.partitions():
        forget(TP(RULES_SOURCE, partition))
    if REPARTITION:
        for partition in forwarded.partitions():
            forget(TP(settings.transactions_topic, partition))


@app.on_partitions_revoked.connect
async def forget_revoked(app, revoked, **kwargs) -> None:
    for tp in revoked:
        forget(tp)
