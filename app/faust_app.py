"""The Faust application: one `WeirApp` configured from `app.settings`.

Agents are discovered from the `agents` package. On first start a worker
creates the topics it needs (`app.topics.provision`) before it consumes.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys

import faust

from app import direct_batches, event_loop, monitoring, transactions
from app.bulk_restore import BulkRestorer, table_manager
from app.kafka_auth import broker_credentials, client_options
from app.partition_log import PartitionLog
from app.settings import Settings
from app.topics import provision
from app.txn_tuning import set_concurrent_transactions_backoff
from tables.errors import WeirError

log = logging.getLogger(__name__)

settings = Settings.of_process()
#: re-reads partitions whose batches Faust delivered with holes or out of order
isolation_level = ("read_committed" if settings.processing_guarantee == "exactly_once"
                   else "read_uncommitted")
partition_log = PartitionLog(settings.kafka_servers, isolation_level,
                             client_options=client_options(settings))
#: restores the tables in bulk before Faust's recovery reads on (app/bulk_restore.py)
restorer = (BulkRestorer(settings.kafka_servers, isolation_level, client_options(settings))
            if settings.bulk_restore == "true" else None)


class WeirApp(faust.App):
    """Faust app that provisions its topics before its consumer starts."""

    async def on_stop(self) -> None:
        # Finish the batch in progress before Faust closes tables and flushes.
        from app.windowed import batch_gate

        log.info("Stopping: finishing the batch in progress")
        await batch_gate.close()
        if self.in_transaction and transactions.OPEN.pending:
            log.info("Stopping: committing %d open transactions", len(transactions.OPEN.open))
            try:
                await transactions.OPEN.commit_due(self.producer._trn_locks, self.conf.id,
                                                   everything=True)
            except Exception:
                log.exception("Stopping: a transaction did not commit; its batches are "
                              "consumed again after the restart")
        await partition_log.close()
        await super().on_stop()

    def _drop_local_state(self) -> None:
        """Under exactly_once, start from the changelogs (committed data only).

        Local RocksDB may hold writes of a transaction that was then aborted (a
        crash, or a stop in the middle of a batch); the changelogs never do.
        """
        tabledir = self.conf.tabledir
        if tabledir.exists():
            log.info("exactly_once: dropping local table state in %s; recovering from changelogs",
                     tabledir)
            shutil.rmtree(tabledir)
            tabledir.mkdir(parents=True)

    def _new_consumer(self):
        from app.consumer import DeliveredOffsetsConsumer

        return DeliveredOffsetsConsumer(
            self.transport, callback=self.topics.on_message, loop=self.transport.loop,
            on_partitions_revoked=self._on_partitions_revoked,
            on_partitions_assigned=self._on_partitions_assigned, beacon=self.beacon)

    def _on_autodiscovery_error(self, name: str) -> None:
        # Faust only logs a failed pipeline import and runs without it; stop instead.
        raise WeirError(f"cannot load pipeline module {name}: {sys.exc_info()[1]!r}")

    async def on_first_start(self) -> None:
        await super().on_first_start()
        if settings.processing_guarantee == "exactly_once":
            self._drop_local_state()
        created = await provision(settings)
        log.info("Topics ready on %s (%d created); event loop: %s", settings.kafka_servers,
                 len(created), event_loop.running())


app = WeirApp(
    settings.app_id,
    broker=settings.faust_broker_url,
    broker_credentials=broker_credentials(settings),
    store="rocksdb://",
    datadir=settings.data_dir,
    autodiscover=["agents"],
    origin="app",
    processing_guarantee=settings.processing_guarantee,
    broker_commit_interval=settings.commit_interval_ms / 1000,
    broker_session_timeout=settings.consumer_session_timeout_ms / 1000,
    broker_heartbeat_interval=min(3.0, settings.consumer_session_timeout_ms / 3000),
    topic_partitions=settings.input_partitions,
    topic_replication_factor=settings.replication_factor,
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    web_host=settings.web_host,
    web_port=settings.web_port,
    web_tables_enabled=settings.web_tables_enabled == "true",
    TableManager=table_manager(restorer),
)
monitoring.install(app, settings)
set_concurrent_transactions_backoff(settings.txn_retry_backoff_ms)
direct_batches.IN_FLIGHT.configure(settings.batch_concurrency)
direct_batches.FOLLOW_UP.configure(settings.fetch_follow_up_ms)
transactions.OPEN.configure(settings.commit_interval_ms, settings.offsets_commit_interval_ms)


@app.task
async def commit_open_transactions() -> None:
    """Transactions whose partitions went quiet commit once their interval has passed (a loop,
    not a Faust timer, which warns whenever a round of commits outlasts its interval)."""
    from app.windowed import batch_gate

    while not app.should_stop:
        await asyncio.sleep(settings.commit_interval_ms / 2000)
        if not app.in_transaction or batch_gate.closed or not transactions.OPEN.pending:
            continue
        try:
            await batch_gate.run([], lambda: transactions.OPEN.commit_due(
                app.producer._trn_locks, app.conf.id))
        except Exception:
            log.exception("An open transaction did not commit; its batches are consumed again")

if settings.dashboard_enabled == "true":
    from app.web import install as install_dashboard

    #: the live dashboard at /dashboard (reads the output topics; app/web.py)
    dashboard = install_dashboard(app, settings)
