"""`weir bench --subjects weir-fraud`: the fraud pipeline (issue 6).

Throughput: N transactions of the generator (`app.generator.TransactionStream`,
1 ms apart in event time, 1% fraud patterns), keyed by ``userId``, then one
transaction per partition far ahead that releases every buffered one; a cold
``weir worker`` is timed from "Worker ready" to the bench reading the last
expected alert (``read_committed``). The alerts must equal the batch oracle's
(``tests/fraud_oracle.py``, loaded from the source checkout), every field but
``detectedAt``.

Latency: transactions offered at ``--fraud-latency-rate`` (default 5,000/s) with
the wall clock as event time, into LogAppendTime topics. An alert's latency is its
append time minus the append time of the transaction that made the pipeline emit
it: for ``LARGE_AMOUNT`` the transaction itself (alerted on arrival); for
``HIGH_FREQUENCY`` and ``IMPOSSIBLE_TRAVEL`` (evaluated once the partition's
watermark, highest transaction time minus ``WEIR_FRAUD_MAX_OUT_OF_ORDERNESS_MS``,
passes the transaction) the first transaction of its partition that moved the
watermark past it. Also reported: from the alert's own transaction (which, for
the ordered rules, includes the watermark delay by design). The target is checked
on the alerts caused after the first ``WARMUP_S`` of offered load (steady state,
as latency benchmarks do); the whole run is reported too. In every run the first
seconds held a few alerts of 60 to 130 ms, at the same moments of the input each
time, on one partition after the other. They are all ``LARGE_AMOUNT`` alerts: the
only kind that can come before the watermark delay (5 s) has passed, so they show
the worker's first seconds, whatever slows it then (not a garbage collection, not
a slow batch, not the stall watch's first reads, not the producers' first
metadata requests: fetching those ahead changed nothing).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import orjson
from aiokafka import AIOKafkaProducer

from app.bench_latency import (LOG_APPEND_TIME, Latency, Record, WatermarkIndex,
                               run_offered_load, summarize)
from app.generator import TransactionStream

ORACLE = Path(__file__).resolve().parents[1] / "tests" / "fraud_oracle.py"
DELAY_MS = 5_000  # WEIR_FRAUD_MAX_OUT_OF_ORDERNESS_MS, its default, set for the worker too
ON_ARRIVAL = ("LARGE_AMOUNT",)
WARMUP_S = 5.0  # alerts caused in the first seconds of offered load: reported apart


def fraud_oracle():
    """`tests.fraud_oracle`, from the source checkout (it is not part of the package)."""
    if not ORACLE.is_file():
        raise RuntimeError(f"weir-fraud needs the source checkout's oracle: no {ORACLE}")
    name = "weir_bench_fraud_oracle"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ORACLE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


def to_tx(oracle, partition: int, offset: int, value: bytes):
    d = orjson.loads(value)
    return oracle.Tx(partition, offset, d["transactionId"], d["userId"], d["amount"],
                     d["location"], d["timestamp"], d.get("lat"), d.get("lon"))


def same_alerts(got: Mapping[str, dict], want: Mapping[str, dict]) -> bool:
    """Same alert ids, and every field the oracle gives equal (floats to 1e-6 relative)."""
    if set(got) != set(want):
        return False
    for key, alert in got.items():
        for name, value in want[key].items():
            mine = alert.get(name)
            if isinstance(value, float) and isinstance(mine, float):
                if abs(mine - value) > 1e-6 * max(1.0, abs(value)):
                    return False
            elif mine != value:
                return False
    return True


def cause_append(alert: dict, tx: Tuple[int, int, int, int], index: WatermarkIndex
                 ) -> Optional[int]:
    """Append time of the transaction that made the pipeline emit ``alert``.

    ``tx``: (partition, index in the partition, event time, append time) of the
    alert's own transaction. On-arrival rules: that transaction. Ordered rules: the
    first transaction of the partition after which the watermark is past it
    (``watermark > ts``, i.e. ``>= ts + 1``)."""
    partition, _, ts, append = tx
    if alert["type"] in ON_ARRIVAL:
        return append
    return index.append_reaching(partition, ts + 1)


@dataclass
class FraudLatencyResult:
    offered_rate: float
    achieved_rate: float
    seconds: float
    transactions: int
    alerts: int
    correct: bool
    to_alert: Latency  # from the transaction that caused the alert to be emitted
    after_warmup: Latency  # the same, for causes after the first WARMUP_S of the run
    to_visible: Latency  # same start, to the bench reading it (read_committed)
    from_own_transaction: Latency
    by_type: Dict[str, Latency]
    note: str = ""


def alert_latencies(inputs: Mapping[int, Sequence[Record]], alerts: Sequence[Record],
                    delay_ms: int, warmup_ms: int = 0
                    ) -> Tuple[List[float], List[float], List[float], List[float],
                               Dict[str, List[float]]]:
    """(to alert append, the same for causes appended ``warmup_ms`` or more after the first
    input, to the bench reading it, from the own transaction, by type) of each alert's
    first record."""
    events = {p: [(orjson.loads(r.value)["timestamp"], r.timestamp) for r in recs]
              for p, recs in inputs.items()}
    index = WatermarkIndex(events, delay_ms)
    by_id = {}
    for p, recs in inputs.items():
        for i, r in enumerate(recs):
            by_id[orjson.loads(r.value)["transactionId"]] = (p, i, events[p][i][0], r.timestamp)
    to_alert, steady, to_visible, own, by_type = [], [], [], [], {}
    first = min((r.timestamp for recs in inputs.values() for r in recs), default=0)
    steady_from = first + warmup_ms
    seen = set()
    for r in alerts:
        alert = orjson.loads(r.value)
        if alert["alertId"] in seen:
            continue
        seen.add(alert["alertId"])
        tx = by_id[alert["transactionId"]]
        cause = cause_append(alert, tx, index)
        if cause is None:
            continue  # the input never released it: the oracle does not expect it either
        to_alert.append(r.timestamp - cause)
        if cause >= steady_from:
            steady.append(r.timestamp - cause)
        to_visible.append(r.received_ms - cause)
        own.append(r.timestamp - tx[3])
        by_type.setdefault(alert["type"], []).append(r.timestamp - cause)
    return to_alert, steady, to_visible, own, by_type


async def bench_fraud_latency(servers: str, partitions: int, rate: float, seconds: float,
                              work: Path, say: Callable[[str], None],
                              tick_ms: int = 5) -> FraudLatencyResult:
    from app.bench import create_topic, weir_env

    oracle = fraud_oracle()
    suffix = uuid.uuid4().hex[:6]
    topic, out = f"bench-fraud-lat-in-{suffix}", f"bench-fraud-lat-alerts-{suffix}"
    await create_topic(servers, topic, partitions, LOG_APPEND_TIME)
    await create_topic(servers, out, partitions, LOG_APPEND_TIME)
    env = weir_env(servers, partitions, work, transactions=topic, fraud_alerts=out)
    env["WEIR_FRAUD_MAX_OUT_OF_ORDERNESS_MS"] = str(DELAY_MS)
    # step 0: event times relative to "now" (0, or a pattern's few seconds back), made
    # absolute with the wall clock as each one is sent
    events = TransactionStream(count=int(rate * seconds), seed=11, start_ms=0, step_ms=0,
                               fraud_fraction=0.01).events()

    def transaction(i: int, now_ms: int) -> Tuple[None, bytes, bytes]:
        key, value = next(events)
        tx = orjson.loads(value)
        tx["timestamp"] += now_ms
        return None, key, orjson.dumps(tx)

    def alerts_due(inputs) -> Tuple[object, int]:
        txs = [to_tx(oracle, p, r.offset, r.value) for p, recs in inputs.items() for r in recs]
        want, _late = oracle.expected(txs, oracle.Thresholds(delay_ms=DELAY_MS))
        return (txs, want), len(want)

    run = await run_offered_load(servers, env, topic, out, work / "weir-fraud-latency.log",
                                 rate, seconds, transaction, alerts_due, "transactions", say,
                                 tick_ms)
    txs, want = run.expected
    got = {a["alertId"]: a for a in (orjson.loads(r.value) for r in run.outputs)}
    correct = len(got) == len(run.outputs) and same_alerts(got, want)
    to_alert, steady, to_visible, own, by_type = alert_latencies(
        run.inputs, run.outputs, DELAY_MS, int(WARMUP_S * 1000))
    return FraudLatencyResult(rate, run.achieved_rate, seconds, len(txs), len(got), correct,
                              summarize(to_alert), summarize(steady), summarize(to_visible),
                              summarize(own),
                              {k: summarize(v) for k, v in sorted(by_type.items())},
                              f"{partitions} partitions, LogAppendTime, exactly_once, "
                              f"watermark delay {DELAY_MS} ms")


async def produce_transactions(servers: str, topic: str, events: int, partitions: int,
                               start_ms: int, oracle, say: Callable[[str], None]) -> list:
    """N generated transactions keyed by userId, then one per partition far ahead in event
    time; returns them as the oracle's `Tx` (partition and offset from the broker)."""
    producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=20,
                                max_batch_size=512 * 1024, acks=1)
    await producer.start()
    started = time.monotonic()
    txs: list = []

    async def settle(pending: list) -> None:
        metas = await asyncio.gather(*(f for f, _ in pending))
        txs.extend(to_tx(oracle, m.partition, m.offset, v) for m, (_, v) in zip(metas, pending))
        pending.clear()

    try:
        pending: list = []
        stream = TransactionStream(count=events, seed=7, start_ms=start_ms, step_ms=1,
                                   fraud_fraction=0.01)
        for i, (key, value) in enumerate(stream.events()):
            pending.append((await producer.send(topic, value, key=key), value))
            if len(pending) >= 20_000:
                await settle(pending)
            if i and i % 200_000 == 0:
                say(f"  produced {i:,} / {events:,}")
        await settle(pending)
        far = start_ms + events + 3_600_000
        for p in range(partitions):
            value = orjson.dumps({"transactionId": f"end-{p}", "userId": f"end-{p}",
                                  "amount": 1.0, "merchantId": "m", "location": "Oslo",
                                  "timestamp": far})
            pending.append((await producer.send(topic, value, key=f"end-{p}".encode(),
                                                partition=p), value))
        await settle(pending)
    finally:
        await producer.stop()
    say(f"  produced {events:,} transactions in {time.monotonic() - started:.1f} s")
    return txs


async def bench_weir_fraud(servers: str, events: int, partitions: int, work: Path,
                           timeout_s: float, say: Callable[[str], None]):
    """Throughput of the fraud pipeline; its alerts checked against the oracle."""
    from app.bench import T0, Result, create_topic, run_weir, weir_env

    oracle = fraud_oracle()
    topic = f"bench-transactions-{uuid.uuid4().hex[:6]}"
    await create_topic(servers, topic, partitions)
    txs = await produce_transactions(servers, topic, events, partitions, T0, oracle, say)
    started = time.monotonic()
    want, late = oracle.expected(txs, oracle.Thresholds(delay_ms=DELAY_MS))
    say(f"  oracle: {len(want):,} alerts, {len(late)} late ({time.monotonic() - started:.1f} s)")
    env = weir_env(servers, partitions, work, transactions=topic)
    env["WEIR_FRAUD_MAX_OUT_OF_ORDERNESS_MS"] = str(DELAY_MS)
    seconds, got, peak, cpu = await run_weir(
        env, work / "weir-fraud.log", env["WEIR_TOPIC_FRAUD_ALERTS"], len(want),
        lambda m, r: m["alertId"], lambda m: True, timeout_s)
    return Result("weir-fraud", events, seconds, events / seconds, peak, cpu, len(got),
                  same_alerts(got, want), "transactions/s; alerts = the fraud oracle's")


def fraud_latency_lines(r: FraudLatencyResult) -> str:
    verdict = "meets" if r.after_warmup.count and r.after_warmup.p99_ms < 50 else "misses"
    types = "; ".join(f"{k} {v.line()}" for k, v in r.by_type.items())
    return "\n".join([
        f"fraud latency at {r.offered_rate:,.0f} tx/s offered ({r.achieved_rate:,.0f} achieved, "
        f"{r.seconds:.0f} s): {r.transactions:,} transactions, {r.alerts} alerts, "
        f"correct: {r.correct}",
        f"  causing transaction append -> alert append, after the first {WARMUP_S:.0f} s: "
        f"{r.after_warmup.line()}  ({verdict} the p99 < 50 ms target)",
        f"  causing transaction append -> alert append, whole run: {r.to_alert.line()}",
        f"  causing transaction append -> alert visible: {r.to_visible.line()}",
        f"  by type: {types}",
        f"  alert's own transaction -> alert append (ordered rules wait for the watermark): "
        f"{r.from_own_transaction.line()}"])
