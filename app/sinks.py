"""Side outputs shared by every pipeline: dead letters and late events."""

from __future__ import annotations

from typing import Any, Dict, Optional

import orjson
from faust.types import EventT, TopicT

from app.models import BadEvent, LateEvent, dead_letter
from tables.engine import LateItem


async def send_dead_letter(topic: TopicT, pipeline: str, exc: BadEvent, event: EventT) -> None:
    msg = event.message
    record = dead_letter(pipeline, exc, event.value, msg.topic, msg.partition, msg.offset)
    await topic.send(key=msg.key, value=record)


async def send_late_event(topic: TopicT, pipeline: str, late: LateItem[EventT]) -> None:
    event = late.item.source
    msg = event.message
    await topic.send(
        key=msg.key,
        value=LateEvent(
            pipeline=pipeline,
            event=orjson.loads(event.value),
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


def future_timestamp(ts_ms: int, horizon_skew_ms: int) -> BadEvent:
    return BadEvent("future_timestamp",
                    f"timestamp {ts_ms} is more than {horizon_skew_ms} ms ahead of the wall clock")


def as_json(value: Optional[bytes]) -> Dict[str, Any]:
    return orjson.loads(value) if value else {}
