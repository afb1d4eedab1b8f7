"""Provisioning of the topics Weir reads and writes.

Inputs, outputs and changelogs get ``WEIR_INPUT_PARTITIONS`` partitions, so a
changelog partition P holds the state of input partition P (Faust's
co-partitioning rule); changelogs are compacted.
"""

from __future__ import annotations

import logging
from typing import Dict, List

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from app.settings import Settings

log = logging.getLogger(__name__)

#: Faust tables of the project, by table name (changelog: <app_id>-<name>-changelog).
TABLES: List[str] = ["order-windows"]


def changelog_topic(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


def wanted_topics(settings: Settings) -> Dict[str, Dict[str, str]]:
    """Every topic the project needs, with its configs."""
    plain: Dict[str, str] = {}
    topics = {
        settings.orders_topic: plain,
        settings.order_metrics_topic: plain,
        settings.late_events_topic: plain,
        settings.dead_letters_topic: plain,
    }
    for table in TABLES:
        topics[changelog_topic(settings, table)] = {"cleanup.policy": "compact"}
    return topics


async def provision(settings: Settings) -> List[str]:
    """Create the missing topics; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, settings.input_partitions, settings.replication_factor, topic_configs=cfg)
            for name, cfg in wanted_topics(settings).items()
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another worker created them at the same time
            log.info("Created topics: %s", ", ".join(t.name for t in missing))
        return [t.name for t in missing]
    finally:
        await admin.close()
