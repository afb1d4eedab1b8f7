"""Pageview analytics: pageviews -> tumbling, hopping and session windows -> metrics, sessions.

Per source partition: decode, fold each pageview into the tumbling window
(``WEIR_PAGEVIEW_WINDOW_SIZE_MS``), the hopping windows
(``WEIR_PAGEVIEW_HOP_SIZE_MS`` advancing by ``WEIR_PAGEVIEW_HOP_ADVANCE_MS``)
and the session of its ``sessionId`` (gap ``WEIR_SESSION_GAP_MS``), under the
partition's watermark. Window partials (exact: distinct sessions and page
counts, not top-k sketches) go to the merge, which emits each window over all
partitions to ``pageview-metrics``; closed sessions go to ``user-sessions``
straight from their partition (producers key pageviews by ``sessionId``, so a
session lives in one partition). Late pageviews go to ``late-events`` once per
view they missed, malformed ones to ``dead-letters``.
"""

from __future__ import annotations

import logging
from typing import Any, List, Sequence

from faust.types import TP, EventT

from app.clock import wall_clock_ms
from app.faust_app import app, partition_log, settings
from app.models import BadEvent, PageviewMetrics, UserSession, decode_pageview
from app.sinks import (Sender, Sink, count_emitted, future_timestamp, send_dead_letter,
                       send_late_event)
from app.topics import register_merge_topic, register_table
from app.partition_log import PartitionLocks
from app.windowed import (MergedView, ViewMerger, check_watches, consume_in_batches, progress_line,
                          run_tick, stall_watches)
from tables.aggregators import Count, Distinct, Fields, FirstAndLast, Frequencies
from tables.dedup import SeenIds
from tables.engine import Item
from tables.faust_store import FaustTableStore
from tables.merge import MergeResult
from tables.sessions import SessionBatchResult, SessionEngine
from tables.windows import HoppingWindow, SessionWindow, TumblingWindow

PIPELINE = "pageviews"
log = logging.getLogger(__name__)

register_merge_topic("pageviews-partials")
register_table("pageview-sessions", per_input=True)
pageviews_topic = app.topic(settings.pageviews_topic, key_type=bytes, value_type=bytes,
                            key_serializer="raw", value_serializer="raw")
partials_topic = app.topic(settings.topic_name("pageviews-partials"), partitions=1,
                           key_serializer="raw", value_serializer="json")
sink = Sink(app, PIPELINE, forget=lambda tp: forget(tp))  # forget: defined below
limits = settings.input_limits
locks = PartitionLocks()

#: a window's accumulator: views, distinct sessions, distinct user ids, pages, referrers
window_stats = Fields(Count(), Distinct(), Distinct(), Frequencies(), Frequencies())
lateness_ms = settings.allowed_lateness_ms
tumbling = MergedView(app, settings, "pageviews-tumbling",
                      TumblingWindow(settings.pageview_window_size_ms, lateness_ms),
                      window_stats, settings.pageviews_topic, partials_topic.get_topic_name(), sink)
hopping = MergedView(app, settings, "pageviews-hopping",
                     HoppingWindow(settings.pageview_hop_size_ms, settings.pageview_hop_advance_ms,
                                   lateness_ms),
                     window_stats, settings.pageviews_topic, partials_topic.get_topic_name(), sink)
VIEWS = {tumbling.name: "tumbling", hopping.name: "hopping"}

#: a session's accumulator: its first and last pageview by (event time, offset)
session_store = FaustTableStore(app.Table("pageview-sessions",
                                          partitions=settings.input_partitions))
sessions = SessionEngine(SessionWindow(settings.session_gap_ms, lateness_ms),
                         settings.max_out_of_orderness_ms, FirstAndLast(), session_store)
SESSIONS_VIEW = "pageview-sessions"

#: pageviews already delivered, by sessionId, timestamp and page (re-deliveries count once)
register_table("pageviews-seen", per_input=True)
seen_store = FaustTableStore(app.Table("pageviews-seen", partitions=settings.input_partitions))
seen = SeenIds(settings.dedup_ttl_ms, seen_store, "WEIR_DEDUP_TTL_MS")


@app.agent(pageviews_topic)
async def pageview_windows(stream):
    """Consume pageviews in batches; each batch is split by source partition."""
    await consume_in_batches(stream, settings, process_pageviews, forget=forget)


async def process_pageviews(partition: int, events: Sequence[EventT]) -> None:
    async with locks(partition):  # Faust's batches and catch-up reads, one at a time
        await _process_pageviews(partition, events)


async def _process_pageviews(partition: int, events: Sequence[EventT]) -> None:
    clocks = [tumbling.engine.clock(partition), hopping.engine.clock(partition),
              sessions.clock(partition)]
    source = TP(settings.pageviews_topic, partition)
    anchor = events[-1]
    events = await partition_log.contiguous(events, min(c.next_offset for c in clocks))
    if not events:
        return
    done_before = max(c.next_offset for c in clocks)  # all move together, in one commit
    async with sink.batch(source) as out:
        # decode: skip what an earlier run already folded in and upstream duplicates;
        # bad input -> dead letters
        window_items: List[Item[EventT]] = []
        session_items: List[Item[EventT]] = []
        horizon_ms = wall_clock_ms() + settings.max_future_skew_ms
        for event in events:
            offset = event.message.offset
            if offset < done_before:
                continue
            try:
                view = decode_pageview(event.value, limits)
            except BadEvent as exc:
                await send_dead_letter(out, settings.dead_letters_topic, PIPELINE, exc, event,
                                       settings.max_event_bytes)
                continue
            if view.timestamp > horizon_ms:  # must not drag any watermark forward
                await send_dead_letter(out, settings.dead_letters_topic, PIPELINE, future_timestamp(
                    view.timestamp, settings.max_future_skew_ms), event, settings.max_event_bytes)
                continue
            if not seen.first_delivery(partition, f"{view.session_id}|{view.timestamp}|{view.page}",
                                       view.timestamp):
                continue
            window_items.append(Item(offset, view.timestamp, [None, view.session_id, view.user_id,
                                                              view.page, view.referrer], event))
            session_items.append(Item(offset, view.timestamp,
                                      ([view.timestamp, offset],
                                       [view.page, view.referrer, view.user_id]),
                                      event, key=view.session_id))
        # window: the tumbling and hopping views, and the sessions
        next_offset = events[-1].message.offset + 1
        results = [(v, v.process(partition, window_items, anchor, next_offset))
                   for v in (tumbling, hopping)]
        session_store.bind(anchor)
        closed = sessions.process(partition, session_items, next_offset=next_offset)
        seen.expire(partition, clocks[0].watermark.watermark_ms)
        # sink: state, partials to the merge, sessions, late pageviews
        for view, result in results:
            await view.publish(out, partition, result)
            for late in result.late:
                await send_late_event(out, settings.late_events_topic, PIPELINE, view.name, late)
        await session_store.flush_changelog(out, partition)
        seen_store.bind(anchor)
        seen.flush(partition, next_offset)
        await seen_store.flush_changelog(out, partition)
        await publish_sessions(out, closed)
        out.consumed(anchor.message.tp, next_offset, events=len(events))


async def publish_sessions(out: Sender, closed: SessionBatchResult) -> None:
    for s in closed.emitted:
        _, entry, _, exit_ = s.acc
        await out.send(settings.user_sessions_topic, s.key.encode(), UserSession(
            sessionId=s.key, sessionStart=s.start_ms, sessionEnd=s.end_ms,
            durationMs=s.end_ms - s.start_ms, pageViews=s.event_count,
            entryPage=entry[0], exitPage=exit_[0], referrer=entry[1], userId=entry[2],
            revision=s.revision, retracted=False).asdict())
    for r in closed.retracted:
        await out.send(settings.user_sessions_topic, r.key.encode(), UserSession(
            sessionId=r.key, sessionStart=r.start_ms, sessionEnd=r.end_ms,
            durationMs=r.end_ms - r.start_ms, pageViews=0, entryPage=None, exitPage=None,
            referrer=None, userId=None, revision=r.revision, retracted=True).asdict())
    for late in closed.late:
        await send_late_event(out, settings.late_events_topic, PIPELINE, SESSIONS_VIEW, late)
    count_emitted(out, PIPELINE, SESSIONS_VIEW, [s.revision for s in closed.emitted])


def metrics_record(view_name: str, start_ms: int, end_ms: int, acc: Any,
                   revision: int) -> PageviewMetrics:
    views, session_ids, user_ids, pages, referrers = acc
    return PageviewMetrics(
        window=VIEWS[view_name], windowStart=start_ms, windowEnd=end_ms, pageViews=views[0],
        activeUsers=Distinct.size(session_ids), identifiedUsers=Distinct.size(user_ids),
        topPages=[list(p) for p in Frequencies.top(pages, settings.top_pages)],
        topReferrers=[list(r) for r in Frequencies.top(referrers, settings.top_referrers)],
        revision=revision)


async def publish_metrics(view: MergedView, result: MergeResult, out: Sender) -> None:
    for w in result.emitted:
        record = metrics_record(view.name, w.start_ms, w.end_ms, w.acc, w.revision)
        await out.send(settings.pageview_metrics_topic,
                       f"{record.window}|{w.start_ms}".encode(), record.asdict())
        log.info("pageviews %s window [%d, %d) revision %d: %d views, %d active users",
                 record.window, w.start_ms, w.end_ms, w.revision, record.pageViews,
                 record.activeUsers)
    for late in result.late:
        await out.send(settings.late_events_topic, str(late.start_ms).encode(), {
            "pipeline": PIPELINE, "view": view.name, "kind": "partial",
            "sourcePartition": late.source_partition, "windowStart": late.start_ms,
            "windowEnd": late.end_ms, "watermark": late.watermark_ms})


merger = ViewMerger([tumbling, hopping], partials_topic.get_topic_name(), sink,
                    publish_metrics, partition_log)


@app.agent(partials_topic)
async def pageview_metrics(stream):
    """Merge the partitions' partial pageview windows into global ones."""
    await merger.consume(stream, settings)


@app.timer(interval=1.0)
async def pageviews_idle_tick() -> None:
    """Idle partitions: event time follows the wall clock; the merge drops them from its minimum."""
    async def tick() -> None:
        now_ms = wall_clock_ms()
        if settings.idle_advance == "true":
            for view in (tumbling, hopping):
                await view.advance_idle(now_ms, settings.idle_timeout_ms)
        await merger.tick(now_ms)

    await run_tick(PIPELINE, tick, forget_all)


@app.timer(interval=10.0)
async def pageviews_progress() -> None:
    log.info(await progress_line(PIPELINE, tumbling.engine, app, settings.pageviews_topic))


watches = stall_watches(app, settings.pageviews_topic, lambda p: tumbling.engine.clock(p).next_offset, process_pageviews, merger)


@app.timer(interval=2.0)
async def pageviews_stall_watch() -> None:
    """Partitions Faust's stream stopped delivering are read from the broker."""
    await check_watches(watches, PIPELINE, forget_all)


def forget(tp: TP) -> None:
    """Drop what this worker holds in memory of a partition (revoked, or its batch failed);
    it is loaded again from the tables if the partition is processed here again."""
    if tp.topic == settings.pageviews_topic:
        tumbling.forget(tp.partition)
        hopping.forget(tp.partition)
        sessions.forget(tp.partition)
        session_store.forget(tp.partition)
        seen.forget(tp.partition)
        seen_store.forget(tp.partition)
    elif tp.topic == partials_topic.get_topic_name():
        merger.forget()


def forget_all() -> None:
    for partition in tumbling.engine.partitions():
        forget(TP(settings.pageviews_topic, partition))
    merger.forget()


@app.on_partitions_revoked.connect
async def forget_revoked(app, revoked, **kwargs) -> None:
    for tp in revoked:
        forget(tp)
