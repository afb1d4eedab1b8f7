"""`weir bench`: Weir's order windows against Quix Streams and a bare consume loop.

One run, one broker, one input: N orders over P partitions (event time 1 ms
apart, so ``N / 60000`` windows of 60 s, and a last order per partition far
ahead that closes them all). Each subject starts cold as its own process:

- **weir**: ``weir worker`` (exactly-once, strict event time), global windows;
- **quix**: Quix Streams, the same tumbling count/sum/avg, exactly-once, ``.final()``
  (per-partition windows: Quix aggregates per key);
- **ceiling**: aiokafka ``getmany`` + orjson + a dict: what Python can do at best;
- **weir-pageviews**: ``weir worker`` on N pageviews of its own (5,000 sessions, 37 pages):
  tumbling and hopping windows and sessions, timed to the last tumbling window (no peer);
- **weir-fraud**: the fraud pipeline on N transactions, then its alert latency
  (`app.bench_fraud`); **weir-latency**: close latency of the order windows under a steady
  offered load (`app.bench_latency`); **weir-recovery**: restoring a table of many keys from
  its changelog (`app.bench_recovery`). These print their own lines and JSON sections.

Throughput is events / seconds from the subject being ready (Weir: "Worker
ready"; Quix: "now processing incoming messages"; the ceiling: its first record) to
the moment the bench has read the last window (``read_committed``). Every
window is checked against totals computed here from the input. Printed as a
table with ratios; written as JSON.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.machine_probe import probe

WINDOW_MS = 60_000
T0 = 1_700_000_040_000  # a window start
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    subject: str
    events: int
    seconds: float
    events_per_s: float
    peak_rss_mb: Optional[float]
    cpu_s: Optional[float]
    windows: int
    correct: bool
    note: str = ""


@dataclass
class Expected:
    global_windows: Dict[int, Tuple[int, float]] = field(default_factory=dict)
    partition_windows: Dict[Tuple[int, int], Tuple[int, float]] = field(default_factory=dict)


def order(i: int, partitions: int) -> Tuple[int, bytes, bytes]:
    p = i % partitions
    value = orjson.dumps({"orderId": f"b{i}", "userId": f"u{i % 1000}", "amount": (i % 500) + 0.5,
                          "timestamp": T0 + i, "productId": f"p{i % 50}"})
    return p, f"k{p}".encode(), value


def expected_windows(events: int, partitions: int) -> Expected:
    exp = Expected()
    for i in range(events):
        start = (T0 + i) // WINDOW_MS * WINDOW_MS
        amount = (i % 500) + 0.5
        for table, key in ((exp.global_windows, start),
                           (exp.partition_windows, (i % partitions, start))):
            n, s = table.get(key, (0, 0.0))
            table[key] = (n + 1, s + amount)
    return exp


async def topic_names(servers: str) -> set:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def delete_topics(servers: str, names: List[str]) -> None:
    if not names:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


async def create_topic(servers: str, name: str, partitions: int,
                       configs: Optional[Dict[str, str]] = None) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})])
        await wait_for_leaders(admin, name, partitions)
    finally:
        await admin.close()


async def wait_for_leaders(admin: AIOKafkaAdminClient, name: str, partitions: int,
                           timeout_s: float = 30.0) -> None:
    """Return once every partition of a new topic has a leader: a producer sending at once
    may otherwise fail with NotLeaderForPartitionError."""
    deadline = time.monotonic() + timeout_s
    while True:
        topics = await admin.describe_topics([name])
        led = [p for t in topics if t["error_code"] == 0
               for p in t["partitions"] if p["error_code"] == 0 and p["leader"] >= 0]
        if len(led) == partitions:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {name}: {len(led)} of {partitions} partitions have a "
                               f"leader after {timeout_s:.0f} s")
        await asyncio.sleep(0.1)


def pageview(i: int, partitions: int) -> Tuple[int, bytes, bytes]:
    session = i % 5000  # a session's pageviews share its key, hence its partition
    p = session % partitions
    value = orjson.dumps({"sessionId": f"s{session}", "userId": None, "page": f"/p{i % 37}",
                          "referrer": None, "timestamp": T0 + i, "userAgent": "bench"})
    return p, f"s{session}".encode(), value


def closing_event(kind: str, p: int, events: int) -> Tuple[int, bytes, bytes]:
    """One event per partition far ahead in event time: it closes every window and session."""
    ts = T0 + events + 100 * WINDOW_MS
    if kind == "orders":
        value = {"orderId": f"end-{p}", "userId": "u", "amount": 0.0, "timestamp": ts,
                 "productId": "p"}
    else:
        value = {"sessionId": f"end-{p}", "page": "/", "timestamp": ts}
    return p, f"k{p}".encode(), orjson.dumps(value)


async def produce_records(servers: str, topic: str,
                          records: Iterable[Tuple[int, Optional[bytes], bytes]],
                          say: Callable[[str], None] = lambda line: None,
                          total: int = 0) -> int:
    """Send (partition, key, value) records as fast as the broker takes them (acks=1, large
    batches, 20,000 in flight at most); returns how many were sent."""
    producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=20,
                                max_batch_size=512 * 1024, acks=1)
    await producer.start()
    sent = 0
    try:
        pending = []
        for p, key, value in records:
            pending.append(await producer.send(topic, value, key=key, partition=p))
            sent += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
            if sent % 200_000 == 0:
                say(f"  produced {sent:,} / {total:,}")
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


async def produce_events(servers: str, topic: str, events: int, partitions: int,
                         say: Callable[[str], None], kind: str = "orders") -> None:
    make = order if kind == "orders" else pageview
    started = time.monotonic()
    records = itertools.chain((make(i, partitions) for i in range(events)),
                              (closing_event(kind, p, events) for p in range(partitions)))
    await produce_records(servers, topic, records, say, events)
    say(f"  produced {events:,} {kind} in {time.monotonic() - started:.1f} s")


class Process:
    """A subject's process: its log, readiness, peak RSS and CPU time."""

    def __init__(self, argv: List[str], env: Dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_for_log(self, pattern: str, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if re.search(pattern, self.log_text()):
                return time.time()
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.log_path.name}: exited:\n{self.log_text()[-3000:]}")
            await asyncio.sleep(0.02)
        raise RuntimeError(f"{self.log_path.name}: no {pattern!r} in {timeout_s:.0f} s")

    def stats(self) -> Tuple[Optional[float], Optional[float]]:
        """(peak RSS in MB, CPU seconds) of the process and its children so far."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None, None
        peak = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
        cpu = sum(int(x) for x in fields[11:15]) / CLK_TCK  # utime stime cutime cstime
        return peak, cpu

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()


#: a subject that sent nothing new for this long has stopped short: its result is reported
#: with the windows it sent (not correct) instead of waiting out the whole timeout (seen twice
#: in a row with Quix Streams: 131 of its 136 windows, then nothing)
STALL_S = 120.0


async def read_windows(servers: str, topic: str, want: int, key_of: Callable[[dict], object],
                       timeout_s: float, keep: Callable[[dict], bool] = lambda m: True,
                       stall_s: float = STALL_S) -> Tuple[float, Dict[object, dict]]:
    """Read ``topic`` (read_committed) until ``want`` distinct windows; return the wall time
    the last one arrived and the windows. With fewer after ``stall_s`` without a new one,
    return those (the caller's check then fails)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=servers, auto_offset_reset="earliest",
                                isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    windows: Dict[object, dict] = {}
    deadline = time.monotonic() + timeout_s
    last_new, last_new_wall = time.monotonic(), time.time()
    try:
        while len(windows) < want:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(windows)} of {want} windows on {topic} "
                                   f"after {timeout_s:.0f} s")
            if time.monotonic() - last_new > stall_s:
                print(f"bench: {topic}: {len(windows)} of {want} windows, none new for "
                      f"{stall_s:.0f} s; giving up on the rest", file=sys.stderr)
                return last_new_wall, windows
            for records in (await consumer.getmany(timeout_ms=100)).values():
                for r in records:
                    m = orjson.loads(r.value)
                    if keep(m):
                        key = key_of(m, r)
                        if key not in windows:
                            last_new, last_new_wall = time.monotonic(), time.time()
                        windows[key] = m
        return time.time(), windows
    finally:
        await consumer.stop()


def matches(got: Dict, want: Dict) -> bool:
    return set(got) == set(want) and all(
        got[k]["totalOrders"] == n and abs(got[k]["totalRevenue"] - s) < 1e-6 * max(1.0, s)
        for k, (n, s) in want.items())


def weir_env(servers: str, partitions: int, work: Path, **topics: str) -> Dict[str, str]:
    suffix = uuid.uuid4().hex[:6]
    env = {"KAFKA_BOOTSTRAP_SERVERS": servers, "WEIR_APP_ID": f"weir-bench-{suffix}",
           "WEIR_INPUT_PARTITIONS": str(partitions), "WEIR_IDLE_ADVANCE": "false",
           "WEIR_DATA_DIR": str(work / "weir-data"), "WEIR_WEB_PORT": str(free_port())}
    for name in ("ORDERS", "ORDER_METRICS", "PAGEVIEWS", "PAGEVIEW_METRICS", "USER_SESSIONS",
                 "TRANSACTIONS", "FRAUD_ALERTS", "LATE_EVENTS", "DEAD_LETTERS"):
        env[f"WEIR_TOPIC_{name}"] = topics.get(name.lower(), f"bench-{name.lower()}-{suffix}")
    return env


def weir_executable() -> str:
    return os.path.join(os.path.dirname(sys.executable), "weir")


async def run_weir(env: Dict[str, str], log_path: Path, out_topic: str, want: int,
                   key_of, keep, timeout_s: float):
    """Start a cold worker; return (seconds from ready to the last window, windows, RSS, CPU)."""
    proc = Process([weir_executable(), "worker", "-l", "info"], env, log_path)
    try:
        ready = await proc.wait_for_log(r"Worker ready", 180)
        done, windows = await read_windows(env["KAFKA_BOOTSTRAP_SERVERS"], out_topic, want,
                                           key_of, timeout_s, keep)
        peak, cpu = proc.stats()
    finally:
        proc.stop()
    return done - ready, windows, peak, cpu


async def bench_weir(servers: str, topic: str, events: int, partitions: int, exp: Expected,
                     work: Path, timeout_s: float) -> Result:
    env = weir_env(servers, partitions, work, orders=topic)
    seconds, windows, peak, cpu = await run_weir(
        env, work / "weir.log", env["WEIR_TOPIC_ORDER_METRICS"], len(exp.global_windows),
        lambda m, r: m["windowStart"], lambda m: True, timeout_s)
    return Result("weir", events, seconds, events / seconds, peak, cpu, len(windows),
                  matches(windows, exp.global_windows), "exactly_once, merged across partitions")


async def bench_weir_pageviews(servers: str, events: int, partitions: int, work: Path,
                               timeout_s: float, say: Callable[[str], None]) -> Result:
    """Weir's pageview pipeline on its own input: tumbling and hopping windows and sessions;
    timed to the last tumbling window, whose page views are checked."""
    topic = f"bench-pageviews-in-{uuid.uuid4().hex[:6]}"
    await create_topic(servers, topic, partitions)
    await produce_events(servers, topic, events, partitions, say, kind="pageviews")
    want: Dict[int, int] = {}
    for i in range(events):
        start = (T0 + i) // WINDOW_MS * WINDOW_MS
        want[start] = want.get(start, 0) + 1
    env = weir_env(servers, partitions, work, pageviews=topic)
    seconds, windows, peak, cpu = await run_weir(
        env, work / "weir-pageviews.log", env["WEIR_TOPIC_PAGEVIEW_METRICS"], len(want),
        lambda m, r: m["windowStart"], lambda m: m["window"] == "tumbling", timeout_s)
    correct = {k: m["pageViews"] for k, m in windows.items()} == want
    return Result("weir-pageviews", events, seconds, events / seconds, peak, cpu, len(windows),
                  correct, "tumbling + hopping windows and sessions, merged exactly")


async def bench_quix(servers: str, topic: str, events: int, exp: Expected, work: Path,
                     timeout_s: float) -> Result:
    suffix = uuid.uuid4().hex[:6]
    out = f"bench-quix-out-{suffix}"
    await create_topic(servers, out, 1)
    proc = Process([sys.executable, "-m", "app.bench_peers", "quix", servers, topic, out,
                    f"quix-bench-{suffix}", str(WINDOW_MS), "10000", str(work / "quix-state")],
                   {}, work / "quix.log")
    try:
        ready = await proc.wait_for_log(r"now processing incoming messages", 180)
        done, windows = await read_windows(
            servers, out, len(exp.partition_windows),
            lambda m, r: (int(r.key.decode()[1:]), m["windowStart"]), timeout_s)
        peak, cpu = proc.stats()
    finally:
        proc.stop()
    seconds = done - ready
    return Result("quix", events, seconds, events / seconds, peak, cpu, len(windows),
                  matches(windows, exp.partition_windows),
                  "exactly-once, per-partition windows (no merge)")


async def bench_ceiling(servers: str, topic: str, events: int, work: Path) -> Result:
    proc = Process([sys.executable, "-m", "app.bench_peers", "ceiling", servers, topic,
                    str(events + 8)], {}, work / "ceiling.log")
    try:
        await asyncio.to_thread(proc.proc.wait, 600)
    finally:
        proc.stop()
    found = re.search(r"ceiling: (\d+) events in ([\d.]+) s", proc.log_text())
    if not found:
        raise RuntimeError(f"ceiling failed:\n{proc.log_text()[-3000:]}")
    seconds = float(found.group(2))
    return Result("ceiling", events, seconds, events / seconds, None, None, 0, True,
                  "no state, no transactions, no output")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def table(results: List[Result]) -> str:
    by = {r.subject: r for r in results}
    lines = ["| subject | events/s | seconds | peak RSS MB | CPU s | windows | correct | vs weir |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in results:
        ratio = (f"weir/{r.subject} = {by['weir'].events_per_s / r.events_per_s:.2f}"
                 if "weir" in by and r.subject in ("quix", "ceiling") else "-")
        lines.append(f"| {r.subject} | {r.events_per_s:,.0f} | {r.seconds:.1f} | "
                     f"{'-' if r.peak_rss_mb is None else f'{r.peak_rss_mb:.0f}'} | "
                     f"{'-' if r.cpu_s is None else f'{r.cpu_s:.1f}'} | {r.windows} | "
                     f"{'yes' if r.correct else 'NO'} | {ratio} |")
    return "\n".join(lines)


@dataclass
class Options:
    """Sizes of the latency, recovery and fraud measurements."""

    latency_rate: float = 10_000.0
    latency_seconds: float = 30.0
    latency_window_ms: int = 1_000
    latency_out_of_orderness_ms: int = 200
    fraud_latency_rate: float = 5_000.0
    recovery_keys: int = 1_000_000
    offered_tick_ms: int = 5


SUBJECTS = ("weir", "quix", "ceiling", "weir-pageviews", "weir-fraud", "weir-latency",
            "weir-recovery")
ORDERS_SUBJECTS = ("weir", "quix", "ceiling")  # they share one input; the others bring their own


async def run(servers: str, events: int, partitions: int, subjects: List[str],
              json_path: Optional[Path], say: Callable[[str], None] = print,
              timeout_s: float = 1800, options: Optional[Options] = None) -> List[Result]:
    """Each subject on fresh topics; the topics the run created are deleted at the end (a
    broker that kept them all slowed down: 13,793 partition folders after a day of runs),
    and before each subject with its own input and each latency measurement, but for the
    orders input (the broker compacting the changelogs of a 1,000,000-event subject made the
    next latency run's p99 worse, and the fraud run after the recovery run's 1,000,000-key
    changelog took 21.8 CPU s against 17.7 s right after the latency run)."""
    options = options or Options()
    unknown = [s for s in subjects if s not in SUBJECTS]
    if unknown:
        raise ValueError(f"unknown subject {unknown[0]!r}: one of {', '.join(SUBJECTS)}")
    before = await topic_names(servers)
    try:
        return await _run(servers, events, partitions, subjects, json_path, say, timeout_s,
                          options, before)
    finally:
        created = sorted(t for t in await topic_names(servers) - before if "bench" in t)
        await delete_topics(servers, created)
        say(f"  deleted the {len(created)} topics of this run")


async def _run(servers: str, events: int, partitions: int, subjects: List[str],
               json_path: Optional[Path], say: Callable[[str], None], timeout_s: float,
               options: Options, before: Set[str]) -> List[Result]:
    from app.bench_fraud import bench_fraud_latency, bench_weir_fraud, fraud_latency_lines
    from app.bench_latency import bench_close_latency, close_latency_lines
    from app.bench_recovery import bench_recovery, recovery_lines

    topic = f"bench-orders-{uuid.uuid4().hex[:6]}"
    work = Path(".weir") / "bench" / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    say(f"bench: {subjects} on {servers}; logs in {work}")
    probe_ms: Dict[str, float] = {"start": probe()}
    say(f"  machine probe: {probe_ms['start']:.1f} CPU ms for a fixed workload (lower: a faster "
        "machine, see app/machine_probe.py; read again before each subject)")
    exp = Expected()
    if set(ORDERS_SUBJECTS) & set(subjects):
        say(f"  {events:,} orders in {partitions} partitions of {topic}")
        await create_topic(servers, topic, partitions)
        await produce_events(servers, topic, events, partitions, say)
        exp = expected_windows(events, partitions)
    results: List[Result] = []
    extra: Dict[str, object] = {}

    async def isolate() -> None:
        """Drop what earlier subjects left on the broker (not the orders input)."""
        left = sorted(t for t in await topic_names(servers) - before
                      if "bench" in t and t != topic)
        if left:
            await delete_topics(servers, left)
            say(f"  deleted the {len(left)} topics of the subjects before")

    for subject in subjects:
        say(f"  running {subject} ...")
        if subject not in ORDERS_SUBJECTS:
            await isolate()
        probe_ms[subject] = probe()
        say(f"  machine probe: {probe_ms[subject]:.1f} CPU ms")
        if subject == "weir-latency":
            lat = await bench_close_latency(
                servers, partitions, options.latency_rate, options.latency_seconds,
                options.latency_window_ms, options.latency_out_of_orderness_ms, work, say,
                options.offered_tick_ms)
            extra["close_latency"] = asdict(lat)
            say(close_latency_lines(lat))
            continue
        if subject == "weir-recovery":
            rec = await bench_recovery(servers, options.recovery_keys, partitions, work,
                                       timeout_s, say)
            extra["recovery"] = asdict(rec)
            say(recovery_lines(rec))
            continue
        if subject == "weir":
            result = await bench_weir(servers, topic, events, partitions, exp, work, timeout_s)
        elif subject == "quix":
            result = await bench_quix(servers, topic, events, exp, work, timeout_s)
        elif subject == "ceiling":
            result = await bench_ceiling(servers, topic, events, work)
        elif subject == "weir-pageviews":
            result = await bench_weir_pageviews(servers, events, partitions, work, timeout_s, say)
        else:  # weir-fraud
            result = await bench_weir_fraud(servers, events, partitions, work, timeout_s, say)
        say(f"  {subject}: {result.events_per_s:,.0f} events/s, correct: {result.correct}")
        results.append(result)
        if subject == "weir-fraud":
            await isolate()
            lat = await bench_fraud_latency(servers, partitions, options.fraud_latency_rate,
                                            options.latency_seconds, work, say,
                                            options.offered_tick_ms)
            extra["fraud_latency"] = asdict(lat)
            say(fraud_latency_lines(lat))
    if results:
        say(table(results))
    if json_path is not None:
        json_path.write_text(json.dumps({"events": events, "partitions": partitions,
                                         "results": [asdict(r) for r in results],
                                         "machine_probe_ms": probe_ms, **extra}, indent=2))
        say(f"results written to {json_path}")
    shutil.rmtree(work / "weir-data", ignore_errors=True)
    shutil.rmtree(work / "quix-state", ignore_errors=True)
    return results
