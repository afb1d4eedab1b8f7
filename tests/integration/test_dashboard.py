"""The dashboard in a real headless Chromium, fed by a real worker and the real broker.

The test produces orders and pageviews whose windows close in event time (a
flush event per partition at the end), computes with the batch oracles what
the dashboard must show (every window's orders, revenue, page views and active
users; the hour's totals; the newest window's top page and referrer; late
events, dead letters and closed sessions; the fraud pipeline's alerts on two
large payments, per `tests.fraud_oracle`), waits until the page shows exactly
that, saves a screenshot, then reloads and checks the history is there at once. A second
worker shares the partitions, and its dashboard shows the same global figures.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from playwright.async_api import async_playwright, expect

from tests.integration.kafka_tools import Worker, produce, read_topic, stop_all_cleanly
from tests.fraud_oracle import Thresholds, Tx, expected as expected_fraud
from tests.oracle import InputEvent, expected_outputs
from tests.pageview_oracle import View, expected_windows

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
SIZE_MS, DELAY_MS, GAP_MS, FRAUD_DELAY_MS = 60_000, 10_000, 60_000, 5_000
PARTITIONS = 4
#: a window start half an hour ago, so the page shows today's clock times
T0 = (int(time.time() * 1000) // SIZE_MS) * SIZE_MS - 30 * SIZE_MS
PAGES = ["/", "/search", "/cart", "/checkout", "/help"] + [f"/products/p{i}" for i in range(8)]
REFERRERS = ["https://www.google.com/", "https://news.example/", "https://mail.example/"]
BAD_ORDERS = [(b"{broken", "invalid_json"), (b"[]", "wrong_shape"),
              (b'{"orderId":"x","userId":"u","amount":1,"productId":"p"}', "missing_field")]
BAD_PAGEVIEWS = [(b"\xc3\x28", "invalid_utf8"), (b'{"sessionId":"","page":"/","timestamp":1}',
                                                 "invalid_value")]
#: transactions two hours back (a fraud flush one hour later is still in the past)
TX0 = T0 - 2 * 60 * SIZE_MS


def order(order_id: str, ts: int, cents: int) -> bytes:
    return json.dumps({"orderId": order_id, "userId": f"u{order_id}", "amount": cents / 100,
                       "timestamp": ts, "productId": "p1"}).encode()


def pageview(session: str, ts: int, page: str, referrer=None, user=None) -> bytes:
    return json.dumps({"sessionId": session, "userId": user, "page": page, "referrer": referrer,
                       "timestamp": ts, "userAgent": "test"}).encode()


def order_input(rnd: random.Random) -> List[Tuple[int, bytes, bytes]]:
    """Five minutes of orders per partition, disorder below the watermark delay, a few
    late and malformed ones, then a flush order that closes every window above."""
    messages = []
    for p in range(PARTITIONS):
        for i in range(60):
            nominal = T0 + i * 5_000
            roll = rnd.random()
            if roll < 0.04:
                value = rnd.choice(BAD_ORDERS)[0]
            elif roll < 0.10 and i > 30:
                value = order(f"{p}-{i}", nominal - rnd.randrange(80_000, 120_000), 125)
            else:
                value = order(f"{p}-{i}", nominal - rnd.randrange(0, 8_000),
                              rnd.randrange(100, 30_000))
            messages.append((p, f"k{p}".encode(), value))
    for p in range(PARTITIONS):
        messages.append((p, f"k{p}".encode(), order(f"flush-{p}", T0 + 20 * SIZE_MS, 100)))
    return messages


def pageview_input(rnd: random.Random) -> List[Tuple[int, bytes, bytes]]:
    """Visits of 1..8 pages, 12 s apart, in four minutes per partition (popular pages more
    often, a referrer on entry pages), sorted by time with neighbours swapped (small
    disorder), a few malformed."""
    messages = []
    weights = [1 / (i + 1) ** 1.2 for i in range(len(PAGES))]
    for p in range(PARTITIONS):
        views = []
        for v in range(24):
            sid, start = f"s{p}-{v}", T0 + rnd.randrange(0, 220_000)
            user = rnd.choice([None, None, f"user{rnd.randrange(20)}"])
            pages = min(rnd.randrange(1, 9), (T0 + 239_000 - start) // 12_000 + 1)
            for k in range(pages):  # all before T0 + 4 min: the last window is a full one
                page = rnd.choices(PAGES, weights)[0]
                ref = rnd.choice(REFERRERS + [None]) if k == 0 else None
                views.append((start + k * 12_000, sid, pageview(sid, start + k * 12_000, page,
                                                                 ref, user)))
        views.sort()
        for i in range(0, len(views) - 1, 2):
            if rnd.random() < 0.5:
                views[i], views[i + 1] = views[i + 1], views[i]
        messages += [(p, sid.encode(), value) for _, sid, value in views]
        messages.insert(rnd.randrange(len(messages)), (p, b"bad", rnd.choice(BAD_PAGEVIEWS)[0]))
    for p in range(PARTITIONS):
        messages.append((p, f"flush-{p}".encode(),
                         pageview(f"flush-{p}", T0 + 20 * SIZE_MS, "/")))
    return messages


def transaction(tid: str, user: str, ts: int, amount: float) -> bytes:
    return json.dumps({"transactionId": tid, "userId": user, "amount": amount,
                       "merchantId": "m-1", "location": "Oslo", "timestamp": ts}).encode()


def transaction_input() -> List[Tuple[int, bytes, bytes]]:
    """Ordinary payments, two large ones (LARGE_AMOUNT alerts), then a flush per partition."""
    messages = [(i % PARTITIONS, f"u{i}".encode(), transaction(f"t{i}", f"u{i}", TX0 + i * 1_000,
                                                               25_000.0 if i in (3, 8) else 40.0))
                for i in range(12)]
    messages += [(p, f"flush-{p}".encode(), transaction(f"flush-{p}", f"flush-{p}",
                                                        TX0 + 3_600_000, 1.0))
                 for p in range(PARTITIONS)]
    return messages


def expected_alerts(tx_in) -> List[dict]:
    txs = []
    for r in tx_in:
        d = json.loads(r.value)
        txs.append(Tx(r.partition, r.offset, d["transactionId"], d["userId"], d["amount"],
                      d["location"], d["timestamp"]))
    alerts, _ = expected_fraud(txs, Thresholds(delay_ms=FRAUD_DELAY_MS))
    return list(alerts.values())


def expected_page(orders_in, pageviews_in) -> Dict:
    """What the dashboard must show, from the inputs as the broker stored them."""
    bad_orders, bad_views = dict(BAD_ORDERS), dict(BAD_PAGEVIEWS)
    events, views, dead = [], [], Counter()
    for r in orders_in:
        if r.value in bad_orders:
            dead[("orders", bad_orders[r.value])] += 1
            continue
        d = json.loads(r.value)
        events.append(InputEvent(r.partition, r.offset, d["timestamp"], d["amount"]))
    for r in pageviews_in:
        if r.value in bad_views:
            dead[("pageviews", bad_views[r.value])] += 1
            continue
        d = json.loads(r.value)
        views.append(View(r.partition, r.offset, d["timestamp"], d["sessionId"], d["userId"],
                          d["page"], d["referrer"]))
    orders = expected_outputs(events, SIZE_MS, DELAY_MS)
    windows, late_views = expected_windows(views, SIZE_MS, SIZE_MS, DELAY_MS)
    assert orders.late and not late_views, "the input has late orders and no late pageviews"
    newest = windows[max(windows)]
    assert newest["topPages"][0][1] >= 5 and newest["topReferrers"], "the newest window is full"
    sessions = {v.session_id for v in views if not v.session_id.startswith("flush-")}
    return {"orders": orders.merged(), "pageviews": windows, "late": len(orders.late),
            "dead": dict(dead), "top_page": newest["topPages"][0],
            "top_referrer": newest["topReferrers"][0], "sessions": len(sessions)}


def money(x: float) -> str:
    return f"{x:,.2f}"


async def assert_page_shows(page, want: Dict, timeout_ms: float) -> None:
    """Every figure the inputs imply, each checked on the rendered page."""
    for start, (count, revenue) in want["orders"].items():
        row = page.locator(f'#recent tr[data-start="{start}"]')
        await expect(row.locator("td.orders")).to_have_text(f"{count:,}", timeout=timeout_ms)
        await expect(row.locator("td.revenue")).to_have_text(money(revenue), timeout=timeout_ms)
    for start, w in want["pageviews"].items():
        row = page.locator(f'#recent tr[data-start="{start}"]')
        await expect(row.locator("td.views")).to_have_text(f"{w['pageViews']:,}", timeout=timeout_ms)
        await expect(row.locator("td.users")).to_have_text(f"{w['activeUsers']:,}",
                                                           timeout=timeout_ms)
    total_orders = sum(n for n, _ in want["orders"].values())
    total_revenue = sum(s for _, s in want["orders"].values())
    await expect(page.locator("#kpi-orders-hour")).to_have_text(f"{total_orders:,}",
                                                                timeout=timeout_ms)
    await expect(page.locator("#kpi-revenue-hour")).to_have_text(money(total_revenue),
                                                                 timeout=timeout_ms)
    views_total = sum(w["pageViews"] for w in want["pageviews"].values())
    await expect(page.locator("#kpi-views-hour")).to_have_text(f"{views_total:,}",
                                                               timeout=timeout_ms)
    name, n = want["top_page"]
    top = page.locator("#top-pages li").first
    await expect(top.locator(".name")).to_have_text(name, timeout=timeout_ms)
    await expect(top.locator(".count")).to_have_text(f"{n:,} view{'s' if n != 1 else ''}",
                                                      timeout=timeout_ms)
    name, n = want["top_referrer"]
    top = page.locator("#top-referrers li").first
    await expect(top.locator(".name")).to_have_text(name, timeout=timeout_ms)
    await expect(top.locator(".count")).to_have_text(f"{n:,} view{'s' if n != 1 else ''}",
                                                      timeout=timeout_ms)
    await expect(page.locator('#late-table tr[data-key="orders/orders-totals"] td.count')
                 ).to_have_text(f"{want['late']:,}", timeout=timeout_ms)
    for (pipeline, reason), count in want["dead"].items():
        await expect(page.locator(f'#dead-table tr[data-key="{pipeline}/{reason}"] td.count')
                     ).to_have_text(f"{count:,}", timeout=timeout_ms)
    await expect(page.locator("#kpi-sessions")).to_have_text(f"{want['sessions']:,}",
                                                             timeout=timeout_ms)
    alerts = page.locator("#fraud-list .alert")
    await expect(alerts).to_have_count(len(want["alerts"]), timeout=timeout_ms)
    for alert in want["alerts"]:  # newest first; the details each type implies
        text = (f"{alert['type'].lower().replace('_', ' ')}user {alert['userId']} · "
                f"tx {alert['transactionId']} · amount {money(alert['amount'])} over "
                f"{money(alert['threshold'])}")
        await expect(alerts.filter(has_text=f"tx {alert['transactionId']} ·").locator(".what")
                     ).to_have_text(text, timeout=timeout_ms)


async def test_every_worker_dashboard_shows_the_figures_the_events_imply_also_after_reload(
    pipeline_env, tmp_path
):
    assert Path(CHROMIUM).exists(), "Chromium missing: run scripts/bootstrap.sh"
    env = {**pipeline_env, "WEIR_FRAUD_MAX_OUT_OF_ORDERNESS_MS": str(FRAUD_DELAY_MS),
           "WEIR_SESSION_GAP_MS": str(GAP_MS), "WEIR_MAX_OUT_OF_ORDERNESS_MS": str(DELAY_MS),
           "WEIR_DASHBOARD_LAG_INTERVAL_MS": "1000"}
    servers = env["KAFKA_BOOTSTRAP_SERVERS"]
    rnd = random.Random(23)
    orders, pageviews, transactions = order_input(rnd), pageview_input(rnd), transaction_input()
    # two workers share the partitions; each dashboard must show the global figures
    workers = [Worker({**env, "WEIR_DATA_DIR": str(tmp_path / f"worker-{i}-data")},
                      tmp_path / f"worker-{i}.log").start() for i in (1, 2)]
    screenshot = tmp_path / "dashboard.png"
    try:
        await asyncio.sleep(1)
        await produce(servers, env["WEIR_TOPIC_ORDERS"], orders)
        await produce(servers, env["WEIR_TOPIC_PAGEVIEWS"], pageviews)
        await produce(servers, env["WEIR_TOPIC_TRANSACTIONS"], transactions)
        want = expected_page(
            await read_topic(servers, env["WEIR_TOPIC_ORDERS"], len(orders), settle_s=0),
            await read_topic(servers, env["WEIR_TOPIC_PAGEVIEWS"], len(pageviews), settle_s=0))
        want["alerts"] = expected_alerts(await read_topic(
            servers, env["WEIR_TOPIC_TRANSACTIONS"], len(transactions), settle_s=0))
        assert sorted(a["transactionId"] for a in want["alerts"]) == ["t3", "t8"]
        assert len(want["orders"]) >= 5 and len(want["pageviews"]) >= 4
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM)
            try:
                page = await browser.new_page(viewport={"width": 1440, "height": 1000})
                await page.goto(f"http://127.0.0.1:{workers[0].web_port}/dashboard")
                await assert_page_shows(page, want, timeout_ms=120_000)
                await expect(page.locator("#status-text")).to_have_text("live")
                # every input was processed and committed: the group's lag drains to zero
                await expect(page.locator("#kpi-lag")).to_have_text("0", timeout=60_000)
                await page.screenshot(path=str(screenshot), full_page=True)
                print(f"dashboard screenshot: {screenshot}")
                # a page that connects late gets the whole history in its first message: all
                # input is processed, so no later delta carries a window; only the snapshot can
                await page.reload()
                await assert_page_shows(page, want, timeout_ms=10_000)
                other = await browser.new_page(viewport={"width": 1440, "height": 1000})
                await other.goto(f"http://127.0.0.1:{workers[1].web_port}/dashboard")
                await assert_page_shows(other, want, timeout_ms=30_000)
            finally:
                await browser.close()
        for worker in workers:
            worker.assert_running()
    finally:
        stop_all_cleanly(workers, timeout_s=30)
