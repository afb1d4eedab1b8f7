"""Consumer lag of the app's group on its input topics, as the broker sees it.

Lag of a partition = its log end offset minus the offset the group committed
there (the next record it will process); a partition without a committed
offset counts from its first offset. Asked of the broker (an admin client for
the group's offsets, a group-less consumer for the log ends), so every
worker reports the lag of the whole group.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


def lag_by_topic(ends: Dict[TopicPartition, int], starts: Dict[TopicPartition, int],
                 committed: Dict[TopicPartition, int]) -> Dict[str, Dict[str, int]]:
    """``{topic: {"lag", "partitions", "behind"}}``: total lag, partition count and how many
    partitions have a lag."""
    out: Dict[str, Dict[str, int]] = {}
    for tp, end in sorted(ends.items()):
        done = committed.get(tp, starts.get(tp, 0))
        lag = max(0, end - done)
        row = out.setdefault(tp.topic, {"lag": 0, "partitions": 0, "behind": 0})
        row["lag"] += lag
        row["partitions"] += 1
        row["behind"] += 1 if lag else 0
    return out


class LagProbe:
    """Measures the lag of ``group_id`` on ``topics`` (those that exist)."""

    def __init__(self, servers: str, group_id: str, topics: List[str],
                 client_options: Optional[Dict[str, Any]] = None) -> None:
        self.servers = servers
        self.client_options = client_options or {}  # TLS/SASL (app.kafka_auth)
        self.group_id = group_id
        self.topics = topics
        self._admin: Optional[AIOKafkaAdminClient] = None
        self._consumer: Optional[AIOKafkaConsumer] = None

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.servers, **self.client_options)
        await self._admin.start()
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.servers, group_id=None,
                                          enable_auto_commit=False, **self.client_options)
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def measure(self) -> Dict[str, Dict[str, int]]:
        assert self._admin is not None and self._consumer is not None
        cluster = await self._consumer._client.fetch_all_metadata()
        tps = [TopicPartition(t, p) for t in self.topics
               for p in sorted(cluster.partitions_for_topic(t) or ())]
        if not tps:
            return {}
        ends = await self._consumer.end_offsets(tps)
        starts = await self._consumer.beginning_offsets(tps)
        offsets = await self._admin.list_consumer_group_offsets(self.group_id, partitions=tps)
        committed = {tp: meta.offset for tp, meta in offsets.items()
                     if meta is not None and meta.offset >= 0}
        return lag_by_topic(ends, starts, committed)
