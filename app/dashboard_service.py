"""The dashboard's background work on a worker: read the outputs, measure the lag, expire.

A `mode.Service` started with the Faust app (after table recovery). Each
loop survives broker errors: it logs, waits and tries again, so the
dashboard never stops a worker.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mode import Service

from app.consumer_lag import LagProbe
from app.dashboard import DashboardState
from app.dashboard_reader import OutputReader, output_topics
from app.kafka_auth import client_options
from app.settings import Settings

log = logging.getLogger(__name__)

RETRY_S = 5.0


class DashboardService(Service):
    """Keeps `feed` (the state) up to date while the worker runs; `stopping` is set when it stops."""

    def __init__(self, settings: Settings, state: DashboardState, **kwargs: Any) -> None:
        self.settings = settings
        self.feed = state
        self.stopping = asyncio.Event()
        options = client_options(settings)
        self.reader = OutputReader(settings.kafka_servers, output_topics(settings), state, options)
        self.lag = LagProbe(settings.kafka_servers, settings.app_id,
                            [settings.orders_topic, settings.pageviews_topic,
                             settings.transactions_topic], options)
        super().__init__(**kwargs)

    async def on_stop(self) -> None:
        self.stopping.set()
        await self.reader.stop()
        await self.lag.stop()

    @Service.task
    async def _read_outputs(self) -> None:
        while not self.should_stop:
            try:
                await self.reader.start()
                await self.reader.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the dashboard must not stop the worker
                if self.stopping.is_set():
                    return  # its consumer was stopped under it
                log.warning("Dashboard: reading the output topics failed (%r); retrying in "
                            "%.0f s", exc, RETRY_S)
                await self.reader.stop()
                await self.sleep(RETRY_S)

    @Service.task
    async def _measure_lag(self) -> None:
        interval_s = self.settings.dashboard_lag_interval_ms / 1000
        started = False
        while not self.should_stop:
            try:
                if not started:
                    await self.lag.start()
                    started = True
                self.feed.set_lag(await self.lag.measure())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                if self.stopping.is_set():
                    return
                log.warning("Dashboard: measuring the consumer lag failed (%r)", exc)
                await self.lag.stop()
                started = False
            await self.sleep(interval_s)

    @Service.task
    async def _expire(self) -> None:
        while not self.should_stop:
            self.feed.expire()
            await self.sleep(1.0)
