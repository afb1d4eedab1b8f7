"""Soak: kill -9 / restart cycles over every pipeline for M minutes, counting what went wrong.

    make soak MINUTES=30        (or: .venv/bin/python -m tests.soak --minutes 30)

Each cycle streams a fresh fixed input (new seed) through the orders, pageviews and
fraud pipelines, kills
the worker at random moments two or three times (data dir kept or deleted at
random), lets a last worker finish, reads every output topic with
``read_committed`` and compares it with the batch oracles. It prints, per cycle
and in total: events in, output records, duplicates found (an output identity
seen twice), losses found (an expected output missing or different) and unexpected
outputs (one the oracles do not expect). Exit status 1 if any was found. A broker of its own is started
unless ``KAFKA_BOOTSTRAP_SERVERS`` is set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT, worker_environment
from tests.fraud_oracle import expected as fraud_expected
from tests.integration import test_fraud_pipeline as fraud
from tests.integration import test_orders_pipeline as orders
from tests.integration import test_pageviews_pipeline as pageviews
from tests.integration.both_pipelines import assert_both_exact, read_both_pipelines, split_flush
from tests.integration.kafka_tools import Worker, produce, read_topic, stream_slowly


@dataclass
class Tally:
    events_in: int = 0
    outputs: int = 0
    duplicates: int = 0
    losses: int = 0
    unexpected: int = 0  # an output the oracles do not expect (e.g. a late event too many)
    kills: int = 0

    def add(self, other: "Tally") -> None:
        for field in self.__dataclass_fields__:
            setattr(self, field, getattr(self, field) + getattr(other, field))

    def line(self) -> str:
        return (f"events in {self.events_in}, outputs {self.outputs}, kills {self.kills}, "
                f"duplicates {self.duplicates}, losses {self.losses}, "
                f"unexpected {self.unexpected}")


def duplicates(records, identity) -> int:
    ids = Counter(identity(json.loads(r.value)) for r in records)
    return sum(n - 1 for n in ids.values())


def late_identity(m):
    return (m["pipeline"], m.get("view"), m.get("sourcePartition"), m.get("sourceOffset"),
            m.get("windowStart"))


def check(outputs, env) -> Tally:
    """Duplicates and losses of one cycle's outputs against the oracles."""
    order_inputs, view_inputs, expected, order_dead, metrics, view_outputs, fraud_part = outputs
    page_metrics, sessions, late, dead = view_outputs
    txs, tx_dead, alerts = fraud_part
    tally = Tally(events_in=len(order_inputs) + len(view_inputs) + len(txs) + len(tx_dead),
                  outputs=len(metrics) + sum(len(x) for x in view_outputs) + len(alerts))
    tally.duplicates = (
        duplicates(metrics, lambda m: (m["windowStart"], m["revision"]))
        + duplicates(page_metrics, lambda m: (m["window"], m["windowStart"], m["revision"]))
        + duplicates(sessions, lambda m: (m["sessionId"], m["sessionStart"], m["revision"],
                                          m["retracted"]))
        + duplicates(late, late_identity)
        + duplicates(dead, lambda m: (m["pipeline"], m["sourcePartition"], m["sourceOffset"]))
        + duplicates(alerts, lambda m: m["alertId"]))
    want_orders = orders.expected_rows(expected)[0]
    got_orders = {}
    for r in sorted(metrics, key=lambda r: json.loads(r.value)["revision"]):
        m = json.loads(r.value)
        got_orders[m["windowStart"]] = (m["totalOrders"], round(m["totalRevenue"], 6),
                                        round(m["avgOrderValue"], 6))
    tally.losses += sum(got_orders.get(k) != v for k, v in want_orders.items())
    views, view_dead = pageviews.decode_inputs(view_inputs)
    want_windows, want_sessions, want_late = pageviews.expected_all(views)
    got_windows = pageviews.window_outputs(page_metrics)[0]
    tally.losses += sum(got_windows[kind].get(start) != w
                        for kind in want_windows for start, w in want_windows[kind].items())
    got_sessions = pageviews.session_outputs(sessions)[0]
    tally.losses += sum(got_sessions.get(k) != s for k, s in want_sessions.items())
    want_alerts, want_tx_late = fraud_expected(txs, fraud.thresholds(env))
    got_alerts = fraud.alerts_of(alerts)
    tally.losses += sum(not fraud.same_alerts({k: got_alerts[k]}, {k: a}) if k in got_alerts
                        else 1 for k, a in want_alerts.items())
    got_late = {late_identity(json.loads(r.value)) for r in late}
    want_late_ids = {("orders", "orders-totals", x.partition, x.offset, x.window_start)
                     for x in expected.late}
    want_late_ids |= {("pageviews", view, p, off, start) for view, p, off, start, *_ in want_late}
    tally.losses += len(want_late_ids - got_late)
    tally.unexpected += len({x for x in got_late if x[0] != "fraud"} - want_late_ids)
    got_tx_late = {(m["sourcePartition"], m["sourceOffset"], m["watermark"])
                   for m in (json.loads(r.value) for r in late) if m["pipeline"] == "fraud"}
    tally.losses += len(set(want_tx_late) - got_tx_late)
    tally.unexpected += len(got_tx_late - set(want_tx_late))
    got_dead = {(m["pipeline"], m["sourcePartition"], m["sourceOffset"])
                for m in (json.loads(r.value) for r in dead)}
    want_dead = ({("orders", p, off) for p, off, _ in order_dead}
                 | {("pageviews", p, off) for p, off, _ in view_dead}
                 | {("fraud", p, off) for p, off, _ in tx_dead})
    tally.losses += len(want_dead - got_dead)
    tally.unexpected += len(got_dead - want_dead)
    return tally


async def cycle(servers: str, work: Path, rnd: random.Random) -> Tally:
    env = {**fraud.fraud_env(pageviews.pageview_env(worker_environment(servers, work / "data"))),
           "WEIR_CONSUMER_SESSION_TIMEOUT_MS": "6000"}
    order_body, order_flush = split_flush(orders.fixed_input(seed=rnd.randrange(10**6)),
                                          b'"flush-')
    view_body, view_flush = split_flush(pageviews.fixed_input(seed=rnd.randrange(10**6)),
                                        b'"flush-')
    tx_body, tx_flush = split_flush(fraud.fixed_input(seed=rnd.randrange(10**6)), b'"flush-')
    producing = asyncio.gather(stream_slowly(servers, env["WEIR_TOPIC_ORDERS"], order_body),
                               stream_slowly(servers, env["WEIR_TOPIC_PAGEVIEWS"], view_body),
                               stream_slowly(servers, env["WEIR_TOPIC_TRANSACTIONS"], tx_body))
    kills = rnd.choice([2, 3])
    worker = Worker(env, work / "worker-0.log").start()
    await read_topic(servers, env["WEIR_TOPIC_ORDER_METRICS"], 1, timeout_s=90, settle_s=0)
    for k in range(kills):
        await asyncio.sleep(rnd.uniform(0.0, 2.0) if k == 0 else rnd.uniform(3.0, 9.0))
        worker.kill()
        if rnd.random() < 0.5:
            shutil.rmtree(env["WEIR_DATA_DIR"], ignore_errors=True)
        if k < kills - 1:
            worker = Worker(env, work / f"worker-{k + 1}.log").start()
    await producing
    await produce(servers, env["WEIR_TOPIC_ORDERS"], order_flush)
    await produce(servers, env["WEIR_TOPIC_PAGEVIEWS"], view_flush)
    await produce(servers, env["WEIR_TOPIC_TRANSACTIONS"], tx_flush)
    worker = Worker(env, work / "worker-last.log").start()
    try:
        outputs = await read_both_pipelines(env, len(order_body) + len(order_flush),
                                            len(view_body) + len(view_flush),
                                            len(tx_body) + len(tx_flush))
    finally:
        worker.stop()
    tally = check(outputs, env)
    tally.kills = kills
    try:  # the tests' own exact check must agree with the counts
        assert_both_exact(outputs, env)
    except AssertionError:
        if not (tally.duplicates or tally.losses or tally.unexpected):
            print("exact check failed where the counts found nothing:\n"
                  + traceback.format_exc(limit=-3), flush=True)
            tally.unexpected += 1
    return tally


async def soak(minutes: float, servers: str, seed: int) -> Tally:
    rnd = random.Random(seed)
    total, n = Tally(), 0
    deadline = time.monotonic() + minutes * 60
    print(f"soak: {minutes:g} min of kill -9 cycles, seed {seed}", flush=True)
    while time.monotonic() < deadline:
        n += 1
        work = Path(tempfile.mkdtemp(prefix=f"weir-soak-{n}-"))
        started = time.monotonic()
        tally = await cycle(servers, work, rnd)
        total.add(tally)
        status = ("exact" if not (tally.duplicates or tally.losses or tally.unexpected)
                  else f"logs in {work}")
        print(f"cycle {n} ({time.monotonic() - started:.0f} s): {tally.line()}: {status}",
              flush=True)
        if status == "exact":
            shutil.rmtree(work, ignore_errors=True)
    print(f"soak total over {n} cycles: {total.line()}", flush=True)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 10**6)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # reconnects during kills
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    home = None
    if not servers:
        from app import broker

        home = ROOT / ".weir" / "soak-broker"
        port = int(os.environ.get("WEIR_SOAK_BROKER_PORT", "19192"))
        broker.wipe(home)
        broker.ensure_jars(home)
        broker.start(home, port, port + 1)
        servers = f"127.0.0.1:{port}"
    try:
        total = asyncio.run(soak(args.minutes, servers, args.seed))
    finally:
        if home is not None:
            broker.stop(home)
    sys.exit(1 if total.duplicates or total.losses or total.unexpected else 0)


if __name__ == "__main__":
    main()
