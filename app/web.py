"""The dashboard's web routes on the worker's Faust web server (aiohttp).

    GET /dashboard            the page (app/static/dashboard.html: inline CSS and JS, no CDN)
    GET /dashboard/events     Server-Sent Events: one ``snapshot`` event with the whole
                              history as soon as a page connects, then a ``delta`` event
                              every WEIR_DASHBOARD_PUSH_INTERVAL_MS (what changed since the
                              last one; see `DashboardState.delta`)
    GET /dashboard/snapshot   the same snapshot as JSON (for scripts and curl)

A browser's EventSource reconnects by itself after a broken connection and
then gets a fresh snapshot, so a page is never left blank or stale.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import Any

import orjson
from aiohttp import web as aiohttp_web
from faust.web import View

from app.dashboard import DashboardState
from app.dashboard_service import DashboardService
from app.settings import Settings

log = logging.getLogger(__name__)

RECONNECT_MS = 2000


def page_html() -> str:
    return resources.files("app").joinpath("static/dashboard.html").read_text(encoding="utf-8")


def sse_message(event: str, data: Any) -> bytes:
    """One Server-Sent Event: its name and one line of JSON."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def stream_feed(request: aiohttp_web.Request, state: DashboardState,
                      stopping: asyncio.Event, interval_s: float) -> aiohttp_web.StreamResponse:
    """Send the snapshot, then a delta every ``interval_s`` until the client or the worker goes."""
    response = aiohttp_web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no"})
    await response.prepare(request)
    try:
        await response.write(f"retry: {RECONNECT_MS}\n\n".encode())
        sent = state.version
        await response.write(sse_message("snapshot", state.snapshot()))
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), interval_s)
            except asyncio.TimeoutError:
                pass
            if stopping.is_set():
                break
            delta = state.delta(sent)
            sent = delta["version"]
            await response.write(sse_message("delta", delta))
    except (ConnectionResetError, ConnectionError):
        log.debug("Dashboard: a page disconnected")
    return response


def install(app: Any, settings: Settings) -> DashboardService:
    """Add the dashboard's routes and its background service to the Faust app."""
    state = DashboardState(settings.dashboard_history_ms)
    service = DashboardService(settings, state)
    app.service(service)
    html = page_html()
    interval_s = settings.dashboard_push_interval_ms / 1000

    @app.page("/dashboard")
    class DashboardPage(View):
        async def get(self, request: Any) -> Any:
            return self.html(html)

    @app.page("/dashboard/events")
    class DashboardEvents(View):
        async def get(self, request: Any) -> Any:
            return await stream_feed(request, state, service.stopping, interval_s)

    @app.page("/dashboard/snapshot")
    class DashboardSnapshot(View):
        async def get(self, request: Any) -> Any:
            return self.bytes(orjson.dumps(state.snapshot()), content_type="application/json")

    async def on_shutdown(_web_app: Any) -> None:
        service.stopping.set()  # open event streams end, so the server stops at once

    app.web.web_app.on_shutdown.append(on_shutdown)
    return service
