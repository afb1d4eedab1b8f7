"""The Faust application: one `WeirApp` configured from `app.settings`.

Agents are discovered from the `agents` package. On first start a worker
creates the topics it needs (`app.topics.provision`) before it consumes.
"""

from __future__ import annotations

import logging
import sys

import faust

from app.settings import Settings
from app.topics import provision
from tables.errors import WeirError

log = logging.getLogger(__name__)

settings = Settings.from_env()


class WeirApp(faust.App):
    """Faust app that provisions its topics before its consumer starts."""

    def _on_autodiscovery_error(self, name: str) -> None:
        # Faust only logs a failed pipeline import and runs without it; stop instead.
        raise WeirError(f"cannot load pipeline module {name}: {sys.exc_info()[1]!r}")

    async def on_first_start(self) -> None:
        await super().on_first_start()
        created = await provision(settings)
        log.info("Topics ready on %s (%d created)", settings.kafka_servers, len(created))


app = WeirApp(
    settings.app_id,
    broker=settings.faust_broker_url,
    store="rocksdb://",
    datadir=settings.data_dir,
    autodiscover=["agents"],
    origin="app",
    processing_guarantee=settings.processing_guarantee,
    topic_partitions=settings.input_partitions,
    topic_replication_factor=settings.replication_factor,
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    web_host=settings.web_host,
    web_port=settings.web_port,
    web_tables_enabled=settings.web_tables_enabled == "true",
)
