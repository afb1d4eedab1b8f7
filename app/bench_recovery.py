"""`weir bench --subjects weir-recovery`: restore a table of N keys from its changelog (issue 5).

The bench writes N keys (``--recovery-keys``, default 1,000,000) straight into the
changelog of the worker's ``fraud-users`` table (a compacted topic of
``WEIR_INPUT_PARTITIONS`` partitions, named as Weir names it), in the format
`tables.faust_store.FaustTableStore` writes: key ``"<P>|e|<user>"`` in
changelog partition P, a user's rule state with its event time as the value.
Writing the changelog directly stands for a worker that had filled the table
(what recovery reads is the same); it takes seconds instead of minutes.

Then a cold ``weir worker`` starts on an empty data dir. Reported, from its log
(Faust's own lines, millisecond stamps): process start to "Recovery complete",
and "Recovery: Starting" to "Recovery complete" (the restore itself, with the
assignment's metadata round trips); the keys are counted one by one in the
worker's RocksDB databases once it has stopped (its ``weir_table_keys`` is RocksDB's
estimate, good enough to know when to stop it).
"""

from __future__ import annotations

import asyncio
import datetime
import re
import shutil
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import orjson

TABLE = "fraud-users"
FAUST_OFFSET_KEY = b"__faust\0offset__"  # Faust's bookkeeping in each partition database
LOG_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


@dataclass
class RecoveryResult:
    keys: int
    keys_restored: Optional[int]
    start_to_recovered_s: Optional[float]
    restore_s: Optional[float]
    start_to_ready_s: Optional[float]
    peak_rss_mb: Optional[float]
    cpu_s: Optional[float]
    correct: bool
    note: str = ""


def log_time(log_text: str, pattern: str) -> Optional[float]:
    """Epoch seconds of the first log line matching ``pattern`` (Faust's local-time stamp)."""
    for line in log_text.splitlines():
        if re.search(pattern, line):
            stamp = LOG_STAMP.match(line)
            if stamp:
                return datetime.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f"
                                                  ).timestamp()
    return None


def metric_value(exposition: str, name: str, labels: str) -> Optional[float]:
    """The value of ``name{labels}`` in a Prometheus text exposition."""
    for line in exposition.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return None


def user_state(i: int, ts_ms: int) -> list:
    """What `agents.fraud_rules` keeps per user, under `tables.ttl.TtlState`'s envelope
    ``[value, touched]``."""
    prev = [f"r{i}-user-{i:07d}", "Oslo", ts_ms, 59.9139, 10.7522]  # id, location, ts, lat, lon
    return [[None, *prev, ts_ms], ts_ms]  # hfAlertTs, prev..., recent...


async def fill_changelog(servers: str, topic: str, keys: int, partitions: int,
                         say: Callable[[str], None]) -> None:
    from app.bench import T0, produce_records

    started = time.monotonic()
    records = ((i % partitions, orjson.dumps(f"{i % partitions}|e|user-{i:07d}"),
                orjson.dumps(user_state(i, T0 + i))) for i in range(keys))
    await produce_records(servers, topic, records)
    say(f"  wrote {keys:,} keys to {topic} in {time.monotonic() - started:.1f} s")


def stored_keys(data_dir: Path, table: str) -> int:
    """Keys of ``table`` in a stopped worker's RocksDB databases, counted one by one (the
    worker's ``weir_table_keys`` is RocksDB's estimate), without Faust's offset key."""
    import rocksdict

    total = 0
    for path in sorted((data_dir / "v1" / "tables").glob(f"{table}-*.db")):
        db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True),
                             access_type=rocksdict.AccessType.read_only())
        try:
            total += sum(1 for key in db.keys() if key != FAUST_OFFSET_KEY)
        finally:
            db.close()
    return total


async def table_keys(port: int, timeout_s: float, want: int) -> Optional[int]:
    """The worker's key count of the table (an estimate), once it reports at least ``want``
    (or the last seen)."""
    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        try:
            text = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
                .read().decode())
            value = metric_value(text, "weir_table_keys", f'table="{TABLE}"')
            seen = None if value is None else int(value)
        except OSError:
            pass
        if seen is not None and seen >= want:
            return seen
        await asyncio.sleep(0.5)
    return seen


async def bench_recovery(servers: str, keys: int, partitions: int, work: Path,
                         timeout_s: float, say: Callable[[str], None]) -> RecoveryResult:
    from app.bench import Process, create_topic, weir_env, weir_executable

    env = weir_env(servers, partitions, work)
    env["WEIR_DATA_DIR"] = str(work / "weir-recovery-data")
    env["WEIR_METRICS_INTERVAL_MS"] = "500"
    shutil.rmtree(env["WEIR_DATA_DIR"], ignore_errors=True)
    topic = f"{env['WEIR_APP_ID']}-{TABLE}-changelog"
    await create_topic(servers, topic, partitions, {"cleanup.policy": "compact"})
    await fill_changelog(servers, topic, keys, partitions, say)
    started = time.time()
    proc = Process([weir_executable(), "worker", "-l", "info"], env, work / "weir-recovery.log")
    try:
        await proc.wait_for_log(r"Worker ready", timeout_s)
        await table_keys(int(env["WEIR_WEB_PORT"]), 120, keys)  # the estimate reached it
        peak, cpu = proc.stats()
    finally:
        proc.stop()
    try:
        restored = stored_keys(Path(env["WEIR_DATA_DIR"]), TABLE)
    finally:
        shutil.rmtree(env["WEIR_DATA_DIR"], ignore_errors=True)
    text = proc.log_text()
    begun = log_time(text, r"\[\^-+\w*Recovery\]: Starting")
    done = log_time(text, r"\[\^-+\w*Recovery\]: Recovery complete")
    ready = log_time(text, r"\[\^-+\w*Recovery\]: Worker ready")
    return RecoveryResult(
        keys, restored, None if done is None else done - started,
        None if done is None or begun is None else done - begun,
        None if ready is None else ready - started, peak, cpu, restored == keys,
        f"table {TABLE}, {partitions} changelog partitions, RocksDB, empty data dir")


def recovery_lines(r: RecoveryResult) -> str:
    def s(x: Optional[float]) -> str:
        return "-" if x is None else f"{x:.1f} s"

    verdict = ("meets" if r.start_to_recovered_s is not None and r.start_to_recovered_s < 20
               else "misses")
    return (f"recovery of {r.keys:,} keys: process start -> recovery complete "
            f"{s(r.start_to_recovered_s)} ({verdict} the 20 s target); restore "
            f"{s(r.restore_s)}; worker ready after {s(r.start_to_ready_s)}; keys restored "
            f"{r.keys_restored}, correct: {r.correct}; peak RSS "
            f"{'-' if r.peak_rss_mb is None else f'{r.peak_rss_mb:.0f} MB'}")
