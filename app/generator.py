"""Load generators: orders, pageviews and transactions with bounded disorder and late ones.

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
import zlib
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


CITIES = [("Oslo", 59.9139, 10.7522), ("Paris", 48.8566, 2.3522), ("London", 51.5072, -0.1276),
          ("New York", 40.7128, -74.0060), ("Tokyo", 35.6762, 139.6503),
          ("Sydney", -33.8688, 151.2093), ("Sao Paulo", -23.5505, -46.6333),
          ("Nairobi", -1.2921, 36.8219), ("Mumbai", 19.0760, 72.8777),
          ("Berlin", 52.5200, 13.4050), ("Madrid", 40.4168, -3.7038), ("Toronto", 43.6532, -79.3832)]
MALFORMED_TRANSACTIONS = [
    b"{not json",
    b'{"transactionId": "x", "userId": "u", "amount": 5}',
    b'{"transactionId": "x", "userId": "u", "amount": -1, "merchantId": "m", '
    b'"location": "Oslo", "timestamp": 1}',
    b"\xff\xfe\xfd",
]
FRAUD_PATTERNS = ("burst", "travel", "large")


@dataclass(frozen=True)
class TransactionStream:
    """Parameters of generated card transactions, keyed by ``userId``.

    Users (uniformly chosen among ``users``, so that ordinary users rarely burst) pay at merchants of their home city, mostly
    with coordinates. A ``fraud_fraction`` of events starts a fraud pattern
    instead: a *burst* (``burst_size`` payments of one user within a few
    seconds: HIGH_FREQUENCY), *travel* (a payment at home, then one 2 s later
    in another city: IMPOSSIBLE_TRAVEL) or a *large* amount (LARGE_AMOUNT).
    Pattern events stay within the last 3 s of event time, so they are not
    late. Disorder, late and malformed events as in `OrderStream`.
    """

    count: int
    seed: int = 1
    start_ms: int = 0
    step_ms: int = 10
    disorder_ms: int = 0
    late_fraction: float = 0.0
    late_lag_ms: int = 70_000
    malformed_fraction: float = 0.0
    fraud_fraction: float = 0.01
    burst_size: int = 8
    users: int = 100_000

    def events(self) -> Iterator[Tuple[bytes, bytes]]:
        rnd = random.Random(self.seed)
        sent = 0
        while sent < self.count:
            nominal = self.start_ms + sent * self.step_ms
            user = f"user-{rnd.randrange(self.users):04d}"
            home = CITIES[zlib.crc32(user.encode()) % len(CITIES)]
            if rnd.random() < self.malformed_fraction:
                batch = [rnd.choice(MALFORMED_TRANSACTIONS)]
            elif rnd.random() < self.fraud_fraction:
                batch = self._pattern(rnd, rnd.choice(FRAUD_PATTERNS), user, home, nominal, sent)
            else:
                if rnd.random() < self.late_fraction:
                    ts = nominal - self.late_lag_ms - rnd.randrange(0, 60_000)
                else:
                    ts = nominal - rnd.randrange(0, self.disorder_ms + 1)
                batch = [self._payment(rnd, f"tx-{self.seed}-{sent}", user, home, ts)]
            for value in batch[:self.count - sent]:
                yield user.encode(), value
                sent += 1

    def _pattern(self, rnd: random.Random, kind: str, user: str, home, nominal: int,
                 number: int) -> list:
        tid = f"tx-{self.seed}-{number}"
        if kind == "burst":
            return [self._payment(rnd, f"{tid}-{j}", user, home, nominal - j * 350)
                    for j in range(self.burst_size)]
        if kind == "travel":
            away = rnd.choice([c for c in CITIES if c != home])
            return [self._payment(rnd, f"{tid}-a", user, home, nominal - 2_000),
                    self._payment(rnd, f"{tid}-b", user, away, nominal)]
        return [self._payment(rnd, tid, user, home, nominal, round(rnd.uniform(10_001, 60_000), 2))]

    @staticmethod
    def _payment(rnd: random.Random, tid: str, user: str, city, ts: int,
                 amount: Optional[float] = None) -> bytes:
        name, lat, lon = city
        tx = {"transactionId": tid, "userId": user,
              "amount": amount if amount is not None else round(rnd.lognormvariate(3.2, 1.0), 2),
              "merchantId": f"merchant-{rnd.randrange(500):03d}", "location": name,
              "timestamp": ts}
        if rnd.random() < 0.9:  # most card terminals report where they are (the city's centre)
            tx.update(lat=lat, lon=lon)
        return orjson.dumps(tx)


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
    stream: Union[OrderStream, "PageviewStream", TransactionStream],
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
    label = {OrderStream: "orders", PageviewStream: "pageviews",
             TransactionStream: "transactions"}[type(stream)]
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
