"""Load generators: realistic orders and pageviews with bounded disorder and a share of late ones.

Event time advances by ``step_ms`` per event from ``start_ms``. Each event is
shifted back by up to ``disorder_ms`` (bounded out-of-orderness); a
``late_fraction`` of events instead lies further back than the watermark can
wait (``late_lag_ms`` plus up to one more window), so their windows are
normally closed on arrival. ``malformed_fraction`` sends broken payloads to
exercise the dead-letter path.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import orjson
from aiokafka import AIOKafkaProducer

PRODUCTS = [f"prod-{i:03d}" for i in range(200)]
MALFORMED = [
    b"{not json",
    b'{"orderId": "x", "amount": 1}',
    b'{"orderId": 1, "userId": "u", "amount": "ten", "timestamp": 1, "productId": "p"}',
    b"\xff\xfe\xfd",
    b"[1, 2, 3]",
]


@dataclass(frozen=True)
class OrderStream:
    """Parameters of a generated order stream."""

    count: int
    seed: int = 1
    start_ms: int = 0
    step_ms: int = 10
    disorder_ms: int = 0
    late_fraction: float = 0.0
    late_lag_ms: int = 70_000
    malformed_fraction: float = 0.0
    users: int = 1000

    def events(self) -> Iterator[Tuple[bytes, bytes]]:
        """(key, value) pairs: key is the user id, value the JSON order."""
        rnd = random.Random(self.seed)
        for i in range(self.count):
            user = f"user-{int(rnd.paretovariate(1.2)) % self.users:04d}"
            if rnd.random() < self.malformed_fraction:
                yield user.encode(), rnd.choice(MALFORMED)
                continue
            nominal = self.start_ms + i * self.step_ms
            if rnd.random() < self.late_fraction:
                ts = nominal - self.late_lag_ms - rnd.randrange(0, 60_000)
            else:
                ts = nominal - rnd.randrange(0, self.disorder_ms + 1)
            amount = round(rnd.lognormvariate(3.5, 0.8), 2)
            order = {
                "orderId": f"o-{self.seed}-{i}",
                "userId": user,
                "amount": amount,
                "timestamp": ts,
                "productId": rnd.choice(PRODUCTS),
            }
            yield user.encode(), orjson.dumps(order)


PAGES = ["/", "/search", "/cart", "/checkout", "/account", "/help"] + [
    f"/products/{p}" for p in PRODUCTS[:60]]
REFERRERS = [("https://www.google.com/", 45), (None, 30), ("https://news.ycombinator.com/", 8),
             ("https://twitter.com/", 7), ("https://newsletter.example.com/", 6),
             ("https://www.bing.com/", 3), ("https://www.reddit.com/", 1)]
MALFORMED_PAGEVIEWS = [
    b"{not json",
    b'{"sessionId": "s", "page": "/"}',
    b'{"sessionId": 7, "page": "/", "timestamp": 1}',
    b"\xff\xfe\xfd",
    b'"a string"',
]


@dataclass
class _Visit:
    session_id: str
    user_id: Optional[str]
    pages_left: int
    next_ms: int
    viewed: int = 0


@dataclass(frozen=True)
class PageviewStream:
    """Parameters of generated pageviews: visits that come and go, keyed by ``sessionId``.

    About ``concurrent_visits`` visits are under way at once. A visit views a
    power-law-popular page every ``think_ms`` on average (exponential), for a
    geometric number of pages (mean ``mean_pages``); its first pageview
    carries the referrer. A share of visitors is logged in (``userId``).
    Disorder, late and malformed events as in `OrderStream`.
    """

    count: int
    seed: int = 1
    start_ms: int = 0
    step_ms: int = 10
    concurrent_visits: int = 200
    mean_pages: float = 6.0
    think_ms: int = 20_000
    logged_in_share: float = 0.4
    disorder_ms: int = 0
    late_fraction: float = 0.0
    late_lag_ms: int = 70_000
    malformed_fraction: float = 0.0

    def events(self) -> Iterator[Tuple[bytes, bytes]]:
        rnd = random.Random(self.seed)
        visits = [self._visit(rnd, i, self.start_ms) for i in range(self.concurrent_visits)]
        started = self.concurrent_visits
        refs, weights = zip(*REFERRERS)
        for i in range(self.count):
            nominal = self.start_ms + i * self.step_ms
            slot = min(range(len(visits)), key=lambda k: visits[k].next_ms)
            visit = visits[slot]
            key = visit.session_id.encode()
            if rnd.random() < self.malformed_fraction:
                yield key, rnd.choice(MALFORMED_PAGEVIEWS)
                continue
            if rnd.random() < self.late_fraction:
                ts = nominal - self.late_lag_ms - rnd.randrange(0, 60_000)
            else:
                ts = nominal - rnd.randrange(0, self.disorder_ms + 1)
            view = {"sessionId": visit.session_id, "userId": visit.user_id,
                    "page": PAGES[(int(rnd.paretovariate(1.1)) - 1) % len(PAGES)],
                    "referrer": rnd.choices(refs, weights)[0] if visit.viewed == 0 else None,
                    "timestamp": ts, "userAgent": "weir-generator/1.0"}
            yield key, orjson.dumps(view)
            visit.pages_left -= 1
            visit.viewed += 1
            visit.next_ms = nominal + int(rnd.expovariate(1 / self.think_ms))
            if visit.pages_left <= 0:
                visits[slot] = self._visit(rnd, started, nominal)
                started += 1

    def _visit(self, rnd: random.Random, number: int, now_ms: int) -> _Visit:
        user = None
        if rnd.random() < self.logged_in_share:
            user = f"user-{int(rnd.paretovariate(1.2)) % 5000:04d}"
        pages = 1 + int(rnd.expovariate(1 / max(self.mean_pages - 1, 1e-9)))
        return _Visit(f"s-{self.seed}-{number}", user, pages,
                      now_ms + int(rnd.expovariate(1 / self.think_ms)))


class Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label = total, label
        self.started = self.drawn = time.monotonic()

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.drawn < 0.1:
            return
        self.drawn = now
        share = done / self.total if self.total else 1.0
        bar = "#" * int(share * 30)
        rate = done / max(now - self.started, 1e-9)
        sys.stderr.write(f"\r{self.label} [{bar:<30}] {done}/{self.total} {rate:,.0f}/s")
        if force:
            sys.stderr.write("\n")
        sys.stderr.flush()


async def produce(
    servers: str,
    topic: str,
    stream: Union[OrderStream, "PageviewStream"],
    rate: float = 0.0,
    partition: Optional[int] = None,
    progress: bool = True,
    client_options: Optional[Dict[str, Any]] = None,
) -> int:
    """Send the stream to ``topic`` at ``rate`` events/s (0: as fast as possible)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=servers, acks="all", enable_idempotence=True, linger_ms=5,
        **(client_options or {}),
    )
    await producer.start()
    label = "orders" if isinstance(stream, OrderStream) else "pageviews"
    bar = Progress(stream.count, f"{label} -> {topic}") if progress else None
    started = time.monotonic()
    sent = 0
    try:
        pending = []
        for key, value in stream.events():
            pending.append(await producer.send(topic, value, key=key, partition=partition))
            sent += 1
            if rate > 0:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
            if bar:
                bar.update(sent)
        await asyncio.gather(*pending)
        await producer.flush()
    finally:
        await producer.stop()
        if bar:
            bar.update(sent, force=True)
    return sent
