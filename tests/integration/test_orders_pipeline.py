"""The orders pipeline through a real broker and real workers, against the batch oracle."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import time
from typing import Dict, List, Tuple

import pytest

from tests.integration.hostile import HOSTILE_ORDERS
from tests.integration.kafka_tools import (Record, Worker, mid_stream_split, produce, read_topic,
                                           redeliver_some)
from tests.oracle import InputEvent, expected_outputs

pytestmark = pytest.mark.integration

SIZE_MS, DELAY_MS = 60_000, 10_000
T0 = 1_699_999_980_000  # a window start
PARTITIONS = 4

MALFORMED = [
    (b"{broken json", "invalid_json"),
    (b"\xc3\x28 not utf-8", "invalid_utf8"),
    (b'{"orderId":"m","userId":"u","amount":5,"productId":"p"}', "missing_field"),
    (b'{"orderId":"m","userId":"u","amount":"5","timestamp":1,"productId":"p"}', "wrong_type"),
    (b"[]", "wrong_shape"),
]
KNOWN_BAD = {**dict(MALFORMED), **dict(HOSTILE_ORDERS)}  # payload -> dead-letter reason


def order(i: str, ts: int, amount: float) -> bytes:
    return json.dumps({"orderId": i, "userId": f"u{i}", "amount": amount,
                       "timestamp": ts, "productId": "p1"}).encode()


def fixed_input(seed: int = 7, per_partition: int = 250) -> List[Tuple[int, bytes, bytes]]:
    """Orders with disorder below the watermark delay, late orders and malformed payloads."""
    rnd = random.Random(seed)
    messages = []
    for p in range(PARTITIONS):
        valid: List[Tuple[int, bytes, bytes]] = []
        for i in range(per_partition):
            nominal = T0 + i * 700
            roll = rnd.random()
            if roll < 0.03:
                messages.append((p, f"k{p}".encode(), rnd.choice(MALFORMED)[0]))
                continue
            if roll < 0.10:
                value = order(f"{p}-{i}", nominal - rnd.randrange(70_000, 130_000), 1.25)
            else:
                value = order(f"{p}-{i}", nominal - rnd.randrange(0, 9_000),
                              round(rnd.uniform(1, 500), 2))
            valid.append((p, f"k{p}".encode(), value))
            messages.append(valid[-1])
            redeliver_some(rnd, messages, valid)
    # edge cases on partition 0: a window's first and last millisecond, then an
    # event that arrives exactly when the watermark reaches its window's end
    last = T0 + per_partition * 700
    w = (last // SIZE_MS + 2) * SIZE_MS
    messages += [
        (0, b"k0", order("edge-start", w, 10.0)),
        (0, b"k0", order("edge-last-ms", w + SIZE_MS - 1, 20.0)),
        (0, b"k0", order("edge-closer", w + SIZE_MS + DELAY_MS, 1.0)),  # watermark = window end
        (0, b"k0", order("edge-late", w + SIZE_MS - 1, 99.0)),  # its window just closed: late
    ]
    future = int(time.time() * 1000) + 600_000  # 10 min ahead of the wall clock
    messages.append((1, b"k1", order("future", future, 5.0)))
    for p in range(PARTITIONS):  # push every partition's watermark past all windows above
        messages.append((p, f"k{p}".encode(), order(f"flush-{p}", w + 10 * SIZE_MS, 1.0)))
    return messages


def edge_window_counted(messages, windows) -> bool:
    """The window holding the edge-start and edge-last-ms orders has their 30.0 in it."""
    starts = [json.loads(v)["timestamp"] for _, _, v in messages if b'"edge-start"' in v]
    return bool(starts) and windows[starts[0]][0] >= 2


def oracle_for(inputs: List[Record], lateness_ms: int = 0):
    """Expected outputs; an order id already delivered on its partition counts once."""
    events, dead, seen = [], [], set()
    for r in inputs:
        reason = KNOWN_BAD.get(r.value)
        if reason is None and b'"orderId": "future"' in r.value:
            reason = "future_timestamp"
        if reason:
            dead.append((r.partition, r.offset, reason))
            continue
        data = json.loads(r.value)
        if (r.partition, data["orderId"]) in seen:
            continue
        seen.add((r.partition, data["orderId"]))
        events.append(InputEvent(r.partition, r.offset, data["timestamp"], data["amount"]))
    return expected_outputs(events, SIZE_MS, DELAY_MS, lateness_ms), sorted(dead)


def summarize(metrics: List[Record], late: List[Record], dead: List[Record]):
    """Final totals per window from order-metrics; revisions must run 0..n without repeats."""
    revisions: Dict[int, List[int]] = {}
    windows: Dict[int, Tuple[int, float, float]] = {}
    for r in metrics:
        m = json.loads(r.value)
        assert m["windowEnd"] == m["windowStart"] + SIZE_MS
        revisions.setdefault(m["windowStart"], []).append(m["revision"])
        if m["revision"] == max(revisions[m["windowStart"]]):
            windows[m["windowStart"]] = (m["totalOrders"], round(m["totalRevenue"], 6),
                                         round(m["avgOrderValue"], 6))
    for start, revs in revisions.items():
        assert sorted(revs) == list(range(len(revs))), f"window {start}: revisions {revs}"
    late_rows = []
    for r in late:
        e = json.loads(r.value)
        late_rows.append((e["sourcePartition"], e["sourceOffset"], e["windowStart"], e["watermark"],
                          e["lateByMs"], e["event"]["timestamp"] == e["eventTimestamp"]))
    dead_rows = sorted((json.loads(r.value)["sourcePartition"], json.loads(r.value)["sourceOffset"],
                        json.loads(r.value)["reason"]) for r in dead)
    return windows, sorted(late_rows), dead_rows, revisions


def expected_rows(expected):
    windows = {k: (n, round(s, 6), round(s / n, 6)) for k, (n, s) in expected.merged().items()}
    late = sorted((x.partition, x.offset, x.window_start, x.watermark, None, True)
                  for x in expected.late)
    return windows, late


async def read_outputs(env, expected, dead_count, settle_s=2.0):
    servers = env["KAFKA_BOOTSTRAP_SERVERS"]
    want_windows, _ = expected_rows(expected)

    def final_values_reached(records):
        return summarize(records, [], [])[0] == want_windows

    metrics = await read_topic(servers, env["WEIR_TOPIC_ORDER_METRICS"], len(want_windows),
                               timeout_s=90, settle_s=settle_s, until=final_values_reached)
    late = await read_topic(servers, env["WEIR_TOPIC_LATE_EVENTS"], len(expected.late),
                            timeout_s=30, settle_s=0.5)
    dead = await read_topic(servers, env["WEIR_TOPIC_DEAD_LETTERS"], dead_count,
                            timeout_s=30, settle_s=0.5)
    return summarize(metrics, late, dead)


def assert_exact(got, expected, dead_expected, inputs, lateness_ms=0):
    windows, late, dead, revisions = got
    want_windows, want_late = expected_rows(expected)
    assert windows == want_windows
    if lateness_ms == 0:
        assert all(revs == [0] for revs in revisions.values())  # one record per window
    else:  # the input has allowed-late events (whether the merged output shows them as
        # revisions depends on when the other partitions' watermarks arrive)
        assert any(e.revision > 0 for e in expected.emissions)
    by_offset = {(r.partition, r.offset): json.loads(r.value)["timestamp"] for r in inputs
                 if r.value not in KNOWN_BAD and b'"future"' not in r.value}
    assert [row[:4] for row in late] == [row[:4] for row in want_late]
    for p, off, _start, wm, late_by, same_ts in late:
        assert late_by == wm - by_offset[(p, off)] and same_ts
    assert dead == dead_expected


@pytest.mark.parametrize("lateness_ms", [0, 30_000], ids=["no-lateness", "lateness-30s"])
async def test_windows_late_events_and_dead_letters_equal_the_batch_oracle(
    pipeline_env, tmp_path, lateness_ms
):
    messages = fixed_input()
    env = {**pipeline_env, "WEIR_ALLOWED_LATENESS_MS": str(lateness_ms)}
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await asyncio.sleep(1)
        await produce(env["KAFKA_BOOTSTRAP_SERVERS"], env["WEIR_TOPIC_ORDERS"], messages)
        inputs = await read_topic(env["KAFKA_BOOTSTRAP_SERVERS"], env["WEIR_TOPIC_ORDERS"],
                                  len(messages), settle_s=0)
        expected, dead_expected = oracle_for(inputs, lateness_ms)
        assert expected.late and len(expected.windows) > 8 and dead_expected  # the input covers each path
        assert len(set(messages)) < len(messages)  # and upstream re-deliveries
        got = await read_outputs(env, expected, len(dead_expected))
        worker.assert_running()
        worker.stop_cleanly()  # a graceful stop exits with status 0
    finally:
        worker.stop()
    assert_exact(got, expected, dead_expected, inputs, lateness_ms)
    assert edge_window_counted(messages, got[0]), "first and last millisecond count in their window"


async def test_a_closed_window_is_visible_to_read_committed_readers_before_the_commit_interval(
    pipeline_env, tmp_path
):
    """The merge commits the batch that emits a window at its end: with a 10-minute commit
    interval, the result still reaches a read_committed reader within seconds."""
    env = {**pipeline_env, "WEIR_COMMIT_INTERVAL_MS": "600000"}
    servers = env["KAFKA_BOOTSTRAP_SERVERS"]
    in_window = [(p, b"k", order(f"a{p}", T0 + 1_000 * p, 10.0)) for p in range(PARTITIONS)]
    closing = [(p, b"k", order(f"b{p}", T0 + SIZE_MS + DELAY_MS + 1, 1.0))
               for p in range(PARTITIONS)]
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await asyncio.sleep(1)
        await produce(servers, env["WEIR_TOPIC_ORDERS"], in_window + closing)
        metrics = await read_topic(servers, env["WEIR_TOPIC_ORDER_METRICS"], 1, timeout_s=30,
                                   settle_s=0)
        worker.assert_running()
        worker.stop_cleanly()  # a graceful stop exits with status 0
    finally:
        worker.stop()
    assert [(json.loads(r.value)["windowStart"], json.loads(r.value)["totalOrders"])
            for r in metrics] == [(T0, PARTITIONS)]


async def produce_slowly(servers, topic, messages, chunk=25, pause_s=0.15):
    for i in range(0, len(messages), chunk):
        await produce(servers, topic, messages[i:i + chunk])
        await asyncio.sleep(pause_s)


@pytest.mark.parametrize("keep_data_dir", [True, False], ids=["data-dir-kept", "data-dir-deleted"])
async def test_restart_mid_stream_emits_no_window_twice_and_loses_no_event(
    pipeline_env, tmp_path, keep_data_dir
):
    messages = fixed_input(seed=11)
    flush = [m for m in messages if b'"flush-' in m[2]]
    body = [m for m in messages if b'"flush-' not in m[2]]
    env = pipeline_env
    servers, topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["WEIR_TOPIC_ORDERS"]
    first, rest = mid_stream_split(body)
    worker = await Worker(env, tmp_path / "worker-1.log").start().wait_ready()
    producing = asyncio.ensure_future(produce_slowly(servers, topic, first))
    try:
        # stop the worker once it emitted a window, with orders still to come
        await read_topic(servers, env["WEIR_TOPIC_ORDER_METRICS"], 1, timeout_s=90, settle_s=0)
        worker.assert_running()
    finally:
        worker.stop_cleanly()
    if not keep_data_dir:
        shutil.rmtree(env["WEIR_DATA_DIR"])
    await producing
    await produce_slowly(servers, topic, rest)
    await produce(servers, topic, flush)
    worker = Worker(env, tmp_path / "worker-2.log").start()
    try:
        inputs = await read_topic(servers, topic, len(messages), settle_s=0)
        expected, dead_expected = oracle_for(inputs)
        got = await read_outputs(env, expected, len(dead_expected), settle_s=3.0)
        worker.assert_running()
        worker.stop_cleanly()  # a graceful stop exits with status 0
    finally:
        worker.stop()
    assert_exact(got, expected, dead_expected, inputs)
