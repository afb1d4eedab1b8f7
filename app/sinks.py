"""Outputs of every pipeline, sent in the transaction of the input that caused them.

Under ``exactly_once`` Faust keeps one transactional producer per source
partition and commits the consumed offsets with it. But its ``Topic.send``
picks the transaction from the *destination* partition, and a topic the app
does not consume has no transaction at all, so such outputs leave outside
any transaction (faust-streaming issue #177). `Sink.send` names the
transaction of the source partition instead: the outputs of a batch, its
changelog writes and its offsets commit or abort together.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import orjson
from faust.types import TP, AppT, EventT

from app.models import BadEvent, LateEvent, dead_letter
from tables.engine import LateItem


class Sink:
    """Sends JSON outputs within the transaction of their source partition."""

    def __init__(self, app: AppT) -> None:
        self.app = app

    def transactional_id(self, source: TP) -> Optional[str]:
        """Faust's transactional id of a consumed partition (None without exactly_once)."""
        if not self.app.in_transaction:
            return None
        group = self.app.assignor.group_for_topic(source.topic)
        return f"{self.app.conf.id}-{group}-{source.partition}"

    async def send(self, topic: str, key: Optional[bytes], value: Any, source: TP,
                   partition: Optional[int] = None) -> None:
        data = value if isinstance(value, bytes) else orjson.dumps(value)
        await self.app.producer.send(topic, key, data, partition, None, None,
                                     transactional_id=self.transactional_id(source))


async def send_dead_letter(sink: Sink, topic: str, pipeline: str, exc: BadEvent,
                           event: EventT) -> None:
    msg = event.message
    record = dead_letter(pipeline, exc, event.value, msg.topic, msg.partition, msg.offset)
    await sink.send(topic, msg.key, record.asdict(), msg.tp)


async def send_late_event(sink: Sink, topic: str, pipeline: str, late: LateItem[EventT]) -> None:
    event = late.item.source
    msg = event.message
    await sink.send(
        topic,
        msg.key,
        LateEvent(
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
        ).asdict(),
        msg.tp,
    )


def future_timestamp(ts_ms: int, horizon_skew_ms: int) -> BadEvent:
    return BadEvent("future_timestamp",
                    f"timestamp {ts_ms} is more than {horizon_skew_ms} ms ahead of the wall clock")


def as_json(value: Optional[bytes]) -> Dict[str, Any]:
    return orjson.loads(value) if value else {}
