"""The dashboard's event stream over a real aiohttp server: snapshot first, then deltas."""

import asyncio

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app.dashboard import DashboardState
from app.web import page_html, stream_feed

T0 = 1_700_000_040_000


def order_window(start, orders, revision=0):
    return {"windowStart": start, "windowEnd": start + 60_000, "totalOrders": orders,
            "totalRevenue": float(orders), "avgOrderValue": 1.0, "revision": revision}


async def next_event(stream) -> tuple:
    """The next Server-Sent Event (name, data) on the stream, skipping the retry hint."""
    name, data = None, None
    while True:
        line = (await asyncio.wait_for(stream.readline(), 5)).decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            data = orjson.loads(line[len("data: "):])
        elif line == "" and name is not None:
            return name, data


async def test_a_page_gets_the_whole_history_at_once_then_what_changed():
    state = DashboardState(3_600_000)
    state.add_order_metrics(order_window(T0, 3))
    stopping = asyncio.Event()
    server = web.Application()

    async def events(request):
        return await stream_feed(request, state, stopping, 0.05)

    server.router.add_get("/events", events)
    async with TestClient(TestServer(server)) as client:
        response = await client.get("/events")
        assert response.headers["Content-Type"] == "text/event-stream"
        name, snapshot = await next_event(response.content)
        assert name == "snapshot" and [p["orders"] for p in snapshot["orders"]] == [3]
        state.add_order_metrics(order_window(T0, 5, revision=1))
        state.add_order_metrics(order_window(T0 + 60_000, 7))
        seen = {}
        while len(seen) < 2:
            name, delta = await next_event(response.content)
            assert name == "delta"
            seen.update({p["start"]: p["orders"] for p in delta["orders"]})
        assert seen == {T0: 5, T0 + 60_000: 7}
        stopping.set()  # the worker stops: the stream ends
        assert await asyncio.wait_for(response.content.read(), 5) == b""


def test_the_page_is_shipped_with_the_package_and_loads_nothing_from_elsewhere():
    html = page_html()
    assert "/dashboard/events" in html and "EventSource" in html
    assert "http://" not in html.replace("http://www.w3.org", "")
    assert "https://" not in html and "<script src" not in html and "<link" not in html
