"""Provisioning of the topics Weir reads and writes.

Inputs, outputs and changelogs get ``WEIR_INPUT_PARTITIONS`` partitions, so a
changelog partition P holds the state of input partition P (Faust's
co-partitioning rule); changelogs are compacted.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Tuple

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from app.kafka_auth import client_options
from app.settings import Settings

log = logging.getLogger(__name__)

#: Faust tables of the pipelines, by table name (changelog: <app_id>-<name>-changelog), and
#: whether they follow the input partitions (True) or hold a global merge (one partition).
#: Pipelines register theirs when their module is imported.
TABLES: Dict[str, bool] = {}
#: Internal one-partition topics (per-partition results on their way to a merge), by suffix.
MERGE_TOPICS: List[str] = []
#: Internal topics that re-key a stream (``WEIR_INPUT_PARTITIONS`` partitions), by suffix.
REPARTITION_TOPICS: List[str] = []


def register_table(name: str, per_input: bool) -> None:
    TABLES[name] = per_input


def register_merge_topic(suffix: str) -> None:
    if suffix not in MERGE_TOPICS:
        MERGE_TOPICS.append(suffix)


def register_repartition_topic(suffix: str) -> None:
    if suffix not in REPARTITION_TOPICS:
        REPARTITION_TOPICS.append(suffix)


def changelog_topic(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


def wanted_topics(settings: Settings) -> Dict[str, Tuple[int, Dict[str, str]]]:
    """Every topic the project needs: partitions and configs."""
    n = settings.input_partitions
    topics = {name: (n, {}) for name in (
        settings.orders_topic, settings.order_metrics_topic, settings.pageviews_topic,
        settings.pageview_metrics_topic, settings.user_sessions_topic,
        settings.transactions_topic, settings.fraud_alerts_topic, settings.late_events_topic, settings.dead_letters_topic)}
    for internal in MERGE_TOPICS:
        topics[settings.topic_name(internal)] = (1, {})
    for internal in REPARTITION_TOPICS:
        topics[settings.topic_name(internal)] = (n, {})
    for table, per_input in TABLES.items():
        topics[changelog_topic(settings, table)] = (n if per_input else 1,
                                                    {"cleanup.policy": "compact"})
    return topics


async def provision(settings: Settings) -> List[str]:
    """Create the missing topics; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_servers,
                                **client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, partitions, settings.replication_factor, topic_configs=cfg)
            for name, (partitions, cfg) in wanted_topics(settings).items()
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
