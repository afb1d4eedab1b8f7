"""`weir bench --subjects weir-latency`: close latency of the order windows (issue 5).

Orders go at a steady offered rate (``--latency-rate``, default 10,000/s, for
``--latency-seconds``) into a fresh input topic, each with the wall clock as its
event time, so that windows of ``--latency-window-ms`` close one after the other
while the load goes on. Input and ``order-metrics`` are created with
``message.timestamp.type=LogAppendTime``: every record carries the broker's
append time.

Latency of a window = append time of its result - append time of the input
record that closed it. The closing record comes from the input alone (an
offline oracle, `WatermarkIndex`): per partition, the first record (offset
order) that brought the partition's watermark (highest event time minus
``WEIR_MAX_OUT_OF_ORDERNESS_MS``) to the window end; the merged watermark is
the minimum over the partitions, so the window closes with the *last* of those
records to be appended. Also reported: until the result is visible to a
``read_committed`` consumer (the bench's own receive time), which adds the
transaction commit and the fetch.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

LOG_APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}


@dataclass
class Latency:
    """Nearest-rank percentiles of a list of latencies, in ms (None when it is empty)."""

    count: int
    p50_ms: Optional[float]
    p99_ms: Optional[float]
    max_ms: Optional[float]

    def line(self) -> str:
        if not self.count:
            return "no sample"
        return (f"p50 {self.p50_ms:.0f} ms, p99 {self.p99_ms:.0f} ms, max {self.max_ms:.0f} ms "
                f"({self.count} samples)")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0 < q <= 100) of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(values: Sequence[float]) -> Latency:
    ordered = sorted(values)
    if not ordered:
        return Latency(0, None, None, None)
    return Latency(len(ordered), percentile(ordered, 50), percentile(ordered, 99), ordered[-1])


class WatermarkIndex:
    """Which input record first moved a partition's watermark to a given point.

    ``records``: per partition, in offset order, ``(event time, append time)`` of each
    record. A partition's watermark after record i is the highest event time of records
    0..i minus ``delay_ms`` (late records do not lower it: it is a running maximum)::

        delay 10, event times 5, 30, 20, 41  ->  watermarks -5, 20, 20, 31
        reaching(20) -> record 1; reaching(25) -> record 3; reaching(32) -> None
    """

    def __init__(self, records: Mapping[int, Sequence[Tuple[int, int]]], delay_ms: int) -> None:
        self.delay_ms = delay_ms
        self._highs: Dict[int, List[int]] = {}
        self._appends: Dict[int, List[int]] = {}
        for partition, recs in records.items():
            highs, high = [], None
            for event_ms, _ in recs:
                high = event_ms if high is None else max(high, event_ms)
                highs.append(high)
            self._highs[partition] = highs
            self._appends[partition] = [append_ms for _, append_ms in recs]

    def reaching(self, partition: int, watermark_ms: int) -> Optional[int]:
        """Index of the first record after which the watermark is >= ``watermark_ms``."""
        highs = self._highs.get(partition, [])
        i = bisect.bisect_left(highs, watermark_ms + self.delay_ms)
        return i if i < len(highs) else None

    def append_reaching(self, partition: int, watermark_ms: int) -> Optional[int]:
        """Append time of that record (None if the partition never got there)."""
        i = self.reaching(partition, watermark_ms)
        return None if i is None else self._appends[partition][i]

    def closing_append(self, watermark_ms: int) -> Optional[int]:
        """Append time of the record that brought the *minimum* over all partitions to
        ``watermark_ms``: the last of the partitions' own reaching records."""
        times = [self.append_reaching(p, watermark_ms) for p in self._highs]
        if not times or any(t is None for t in times):
            return None
        return max(times)


def watermark_sent(partials: Sequence[Tuple[int, dict]], view: str, partitions: int,
                   watermark_ms: int) -> Optional[int]:
    """When the last source partition reported a watermark >= ``watermark_ms`` to the
    merge: the latest over partitions of the timestamp of each one's first such
    record on the partials topic (``(timestamp, record)`` in offset order); None if some
    partition never did."""
    first: Dict[int, int] = {}
    for ts, rec in partials:
        if (rec.get("view") == view and rec.get("kind") == "watermark"
                and rec["watermarkMs"] >= watermark_ms and rec["partition"] not in first):
            first[rec["partition"]] = ts
    if len(first) < partitions:
        return None
    return max(first.values())


@dataclass
class Record:
    partition: int
    offset: int
    timestamp: int
    key: Optional[bytes]
    value: bytes
    received_ms: int = 0  # the bench's wall clock when it read the record


async def read_log(servers: str, topic: str, timeout_s: float = 120) -> Dict[int, List[Record]]:
    """Every record now in ``topic`` (read_uncommitted, up to the end offsets), by partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False,
                                max_partition_fetch_bytes=4 * 2**20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic)
                                                        or await _partitions(consumer, topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: Dict[int, List[Record]] = {tp.partition: [] for tp in tps}
        deadline = time.monotonic() + timeout_s
        quiet = 0  # a transactional topic may end with a commit marker, never a record
        while quiet < 3 and [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"reading {topic} took over {timeout_s:.0f} s")
            batches = await consumer.getmany(timeout_ms=500, max_records=50_000)
            quiet = 0 if batches else quiet + 1
            for tp, recs in batches.items():
                out[tp.partition].extend(Record(r.partition, r.offset, r.timestamp, r.key, r.value)
                                         for r in recs)
        return out
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set:
    await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public way
    return consumer.partitions_for_topic(topic) or set()


class OutputWatch:
    """Reads an output topic (read_committed) in the background, noting when each record
    reached the bench."""

    def __init__(self, servers: str, topic: str) -> None:
        self.servers, self.topic = servers, topic
        self.records: List[Record] = []
        self._task: Optional[asyncio.Task] = None
        self._consumer: Optional[AIOKafkaConsumer] = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(self.topic, bootstrap_servers=self.servers,
                                          auto_offset_reset="earliest",
                                          isolation_level="read_committed",
                                          enable_auto_commit=False, fetch_max_wait_ms=10)
        await self._consumer.start()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            for recs in (await self._consumer.getmany(timeout_ms=100)).values():
                now_ms = int(time.time() * 1000)
                self.records.extend(Record(r.partition, r.offset, r.timestamp, r.key, r.value,
                                           now_ms) for r in recs)

    async def wait_for(self, done: Callable[[List[Record]], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done(self.records):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def wait_quiet(self, quiet_s: float, timeout_s: float) -> None:
        """Until no record came for ``quiet_s`` (at most ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        seen, since = len(self.records), time.monotonic()
        while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if len(self.records) != seen:
                seen, since = len(self.records), time.monotonic()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._consumer is not None:
            await self._consumer.stop()


async def produce_steady(servers: str, topic: str, rate: float, seconds: float,
                         make: Callable[[int, int], Tuple[Optional[int], bytes, bytes]],
                         tick_ms: int = 5) -> float:
    """Send ``rate * seconds`` records at a steady ``rate``, what is due every ``tick_ms`` (also
    the producer's linger; Kafka 4's producers linger 5 ms by default); ``make(i, now_ms)``
    gives (partition or None for the key's, key, value). Returns the rate achieved.

    Sending every 2 ms took the bench's own process about half a core at 5,000 records/s
    (mostly produce requests), from the worker and the broker on a 2-core machine; the
    latencies count from the broker's append, not from the send."""
    producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=tick_ms, acks=1)
    await producer.start()
    total = int(rate * seconds)
    sent = 0
    pending = []
    started = time.monotonic()
    try:
        while sent < total:
            due = min(total, int((time.monotonic() - started) * rate) + 1)
            now_ms = int(time.time() * 1000)
            while sent < due:
                partition, key, value = make(sent, now_ms)
                pending.append(await producer.send(topic, value, key=key, partition=partition))
                sent += 1
            if len(pending) > 5_000:
                await asyncio.gather(*pending)
                pending = []
            await asyncio.sleep(tick_ms / 1000)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent / (time.monotonic() - started)


@dataclass
class CloseLatencyResult:
    offered_rate: float
    achieved_rate: float
    seconds: float
    window_ms: int
    max_out_of_orderness_ms: int
    windows: int
    correct: bool
    append_to_append: Latency
    append_to_visible: Latency
    input_to_partial: Latency  # closing input append -> last partition's watermark sent
    partial_to_result: Latency  # that watermark sent -> result append (commit + merge)
    slowest: List[Tuple[int, int, int]] = field(default_factory=list)  # the 5 slowest windows:
    # (window start, closing input -> watermark sent, watermark sent -> result append), in ms
    peak_rss_mb: Optional[float] = None
    cpu_s: Optional[float] = None
    note: str = ""


def order_events(inputs: Mapping[int, Sequence[Record]]) -> Dict[int, List[Tuple[int, int]]]:
    """(event time, append time) of each input order, per partition in offset order."""
    return {p: [(orjson.loads(r.value)["timestamp"], r.timestamp) for r in recs]
            for p, recs in inputs.items()}


def closed_windows(events: Mapping[int, Sequence[Tuple[int, int]]], delay_ms: int,
                   window_ms: int) -> Dict[int, Tuple[int, int]]:
    """The windows the input closed: start -> (orders in it, append time of the closing
    input record)."""
    index = WatermarkIndex(events, delay_ms)
    counts: Dict[int, int] = {}
    for recs in events.values():
        for ts, _ in recs:
            start = ts - ts % window_ms
            counts[start] = counts.get(start, 0) + 1
    closed = {}
    for start, n in counts.items():
        closing = index.closing_append(start + window_ms)
        if closing is not None:
            closed[start] = (n, closing)
    return closed


def close_latencies(closed: Mapping[int, Tuple[int, int]], outputs: Sequence[Record]
                    ) -> Tuple[List[float], List[float], bool]:
    """Per window result (revision 0): its append time - the closing input's append time,
    and the time the bench read it - the same; and whether the results are exactly the
    closed windows, once each, with the right order counts."""
    firsts: Dict[int, List[dict]] = {}
    to_append, to_visible = [], []
    for r in outputs:
        m = orjson.loads(r.value)
        if m["revision"] != 0:
            continue
        firsts.setdefault(m["windowStart"], []).append(m)
        if m["windowStart"] in closed and len(firsts[m["windowStart"]]) == 1:
            closing = closed[m["windowStart"]][1]
            to_append.append(r.timestamp - closing)
            to_visible.append(r.received_ms - closing)
    correct = set(firsts) == set(closed) and all(
        len(ms) == 1 and ms[0]["totalOrders"] == closed[s][0] for s, ms in firsts.items())
    return to_append, to_visible, correct


def stages(closed: Mapping[int, Tuple[int, int]], outputs: Sequence[Record],
           partials: Sequence[Tuple[int, dict]], view: str, partitions: int, window_ms: int
           ) -> Dict[int, Tuple[int, int]]:
    """Per window result: window start -> (closing input append -> last watermark sent to
    the merge, that -> result append)."""
    split: Dict[int, Tuple[int, int]] = {}
    done = set()
    for r in outputs:
        m = orjson.loads(r.value)
        start = m["windowStart"]
        if m["revision"] != 0 or start not in closed or start in done:
            continue
        done.add(start)
        sent = watermark_sent(partials, view, partitions, start + window_ms)
        if sent is not None:
            split[start] = (sent - closed[start][1], r.timestamp - sent)
    return split


@dataclass
class OfferedRun:
    """What one run at an offered load saw: the input as appended, the outputs, the worker."""

    achieved_rate: float
    inputs: Dict[int, List[Record]]
    expected: object  # whatever ``expect`` derived from the inputs
    outputs: List[Record]
    peak_rss_mb: Optional[float]
    cpu_s: Optional[float]


async def save_metrics(env: Dict[str, str], path: Path) -> None:
    """The worker's /metrics at the end of the run, beside its log (batch timings, commits)."""
    url = f"http://127.0.0.1:{env['WEIR_WEB_PORT']}/metrics"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                path.write_text(await resp.text())
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        path.write_text(f"# {url}: {exc!r}\n")


async def run_offered_load(servers: str, env: Dict[str, str], topic: str, out: str,
                           log_path: Path, rate: float, seconds: float,
                           make: Callable[[int, int], Tuple[Optional[int], bytes, bytes]],
                           expect: Callable[[Dict[int, List[Record]]], Tuple[object, int]],
                           what: str, say: Callable[[str], None], tick_ms: int = 5) -> OfferedRun:
    """A cold `weir worker` with ``env``; once ready, ``rate`` records/s of ``make`` into
    ``topic`` for ``seconds``, then the records of ``out`` until ``expect(inputs)`` says how
    many should come (and 1 s more, where a duplicate would show)."""
    from app.bench import Process, weir_executable

    proc = Process([weir_executable(), "worker", "-l", "info"], env, log_path)
    watch = OutputWatch(servers, out)
    try:
        await proc.wait_for_log(r"Worker ready", 180)
        await watch.start()
        say(f"  offering {rate:,.0f} {what}/s for {seconds:.0f} s ...")
        achieved = await produce_steady(servers, topic, rate, seconds, make, tick_ms)
        # the last outputs first: the oracle below takes seconds of this loop's thread at
        # 150,000 records, and the watch, on this loop, noted what came meanwhile as received
        # only after it (seen: the last alerts "visible" 0.5 to 1.8 s after their cause)
        await watch.wait_quiet(1.0, 30)
        inputs = await read_log(servers, topic)
        expected, count = expect(inputs)
        if not await watch.wait_for(lambda recs: len(recs) >= count, 60):
            say(f"  only {len(watch.records)} of {count} outputs arrived")
        await asyncio.sleep(1.0)
        peak, cpu = proc.stats()
        await save_metrics(env, log_path.with_suffix(".metrics"))
    finally:
        proc.stop()
        await watch.stop()
    return OfferedRun(achieved, inputs, expected, list(watch.records), peak, cpu)


async def bench_close_latency(servers: str, partitions: int, rate: float, seconds: float,
                              window_ms: int, delay_ms: int, work: Path,
                              say: Callable[[str], None], tick_ms: int = 5) -> CloseLatencyResult:
    from app.bench import create_topic, weir_env

    suffix = uuid.uuid4().hex[:6]
    topic, out = f"bench-latency-in-{suffix}", f"bench-latency-out-{suffix}"
    await create_topic(servers, topic, partitions, LOG_APPEND_TIME)
    await create_topic(servers, out, partitions, LOG_APPEND_TIME)
    env = weir_env(servers, partitions, work, orders=topic, order_metrics=out)
    env.update(WEIR_ORDER_WINDOW_SIZE_MS=str(window_ms),
               WEIR_MAX_OUT_OF_ORDERNESS_MS=str(delay_ms))

    def order(i: int, now_ms: int) -> Tuple[int, bytes, bytes]:
        p = i % partitions
        return p, f"k{p}".encode(), orjson.dumps({
            "orderId": f"l{i}", "userId": f"u{i % 1000}", "amount": (i % 500) + 0.5,
            "timestamp": now_ms, "productId": f"p{i % 50}"})

    def closed_by(inputs: Dict[int, List[Record]]) -> Tuple[object, int]:
        closed = closed_windows(order_events(inputs), delay_ms, window_ms)
        return closed, len(closed)

    run = await run_offered_load(servers, env, topic, out, work / "weir-latency.log", rate,
                                 seconds, order, closed_by, "orders", say, tick_ms)
    closed = run.expected
    to_append, to_visible, correct = close_latencies(closed, run.outputs)
    partials = [(r.timestamp, orjson.loads(r.value)) for recs in (await read_log(
        servers, f"{env['WEIR_APP_ID']}-orders-partials")).values() for r in recs]
    split = stages(closed, run.outputs, partials, "orders-totals", partitions, window_ms)
    slowest = sorted(((start, a, b) for start, (a, b) in split.items()),
                     key=lambda s: s[1] + s[2], reverse=True)[:5]
    return CloseLatencyResult(rate, run.achieved_rate, seconds, window_ms, delay_ms, len(closed),
                              correct, summarize(to_append), summarize(to_visible),
                              summarize([a for a, _ in split.values()]),
                              summarize([b for _, b in split.values()]), slowest,
                              run.peak_rss_mb, run.cpu_s,
                              f"{partitions} partitions, LogAppendTime, exactly_once")


def close_latency_lines(r: CloseLatencyResult) -> str:
    verdict = "meets" if r.append_to_append.count and r.append_to_append.p99_ms < 100 else "misses"
    return "\n".join([
        f"close latency at {r.offered_rate:,.0f} orders/s offered ({r.achieved_rate:,.0f} "
        f"achieved, {r.seconds:.0f} s, windows of {r.window_ms} ms, out-of-orderness "
        f"{r.max_out_of_orderness_ms} ms), {r.windows} windows, correct: {r.correct}",
        f"  closing input append -> result append:  {r.append_to_append.line()}  "
        f"({verdict} the p99 < 100 ms target)",
        f"  closing input append -> result visible: {r.append_to_visible.line()}",
        f"  of which: closing input -> its partition's watermark sent to the merge: "
        f"{r.input_to_partial.line()}",
        f"            watermark sent -> result append (commit, merge): "
        f"{r.partial_to_result.line()}",
        f"  worker: {r.cpu_s or 0:.1f} CPU s, peak RSS {r.peak_rss_mb or 0:.0f} MB"])
