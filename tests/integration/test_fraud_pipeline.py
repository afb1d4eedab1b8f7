"""The fraud pipeline through a real broker and real workers, against the batch oracle.

Random out-of-order transactions with re-deliveries, late ones and malformed
payloads; the alerts (every field but ``detectedAt``) and the late
transactions must equal `tests.fraud_oracle` exactly, each alert once, also
across a worker restart in the middle of the stream (data dir kept or deleted).
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import time
from typing import Dict, List, Tuple

import pytest

from tests.fraud_oracle import Thresholds, Tx, expected
from tests.integration.kafka_tools import (Record, Worker, produce, read_topic, stream_slowly,
                                           wait_for)

pytestmark = pytest.mark.integration

T0 = 1_699_999_980_000
PARTITIONS = 4
DELAY_MS = 5_000
REPARTITION_DELAY_MS = 15_000
CITIES = [("Oslo", 59.91, 10.75), ("Paris", 48.86, 2.35), ("Oslo", None, None),
          ("Bergen", None, None), ("Paris", None, None), ("Oslo", 59.92, 10.76)]
MALFORMED = [
    (b"{broken json", "invalid_json"),
    (b'{"transactionId":"m","userId":"u","amount":5,"merchantId":"x","location":"Oslo"}',
     "missing_field"),
    (b'{"transactionId":"m","userId":"u","amount":-5,"merchantId":"x","location":"Oslo",'
     b'"timestamp":1}', "invalid_value"),
    (b'{"transactionId":"m","userId":"u","amount":5,"merchantId":"x","location":"Oslo",'
     b'"timestamp":1700000000000,"lat":10}', "invalid_value"),
    (b'{"transactionId":"m","userId":"","amount":5,"merchantId":"x","location":"Oslo",'
     b'"timestamp":1}', "invalid_value"),
]


def transaction(tid: str, user: str, ts: int, amount: float, city=("Oslo", None, None)) -> bytes:
    name, lat, lon = city
    data = {"transactionId": tid, "userId": user, "amount": amount, "merchantId": "m-1",
            "location": name, "timestamp": ts}
    if lat is not None:
        data.update(lat=lat, lon=lon)
    return json.dumps(data).encode()


def fixed_input(seed: int = 3, per_partition: int = 300,
                flush_users: int = PARTITIONS) -> List[Tuple[int, bytes, bytes]]:
    """Per partition: users with bursts, city hops, large amounts, disorder below the
    watermark delay, a share far behind it (late), re-deliveries and malformed payloads."""
    rnd = random.Random(seed)
    streams: List[List[Tuple[int, bytes, bytes]]] = []
    for p in range(PARTITIONS):
        messages: List[Tuple[int, bytes, bytes]] = []
        streams.append(messages)
        sent: List[Tuple[int, bytes, bytes]] = []
        users = [f"u{p}-{k}" for k in range(12)]
        for i in range(per_partition):
            roll = rnd.random()
            if roll < 0.03:
                messages.append((p, b"bad", rnd.choice(MALFORMED)[0]))
                continue
            if roll < 0.08 and sent:  # a re-delivery, identical
                messages.append(rnd.choice(sent))
                continue
            user = rnd.choice(users[:3] if rnd.random() < 0.4 else users)  # some users burst
            nominal = T0 + i * 400
            if roll < 0.13:
                ts = nominal - rnd.randrange(5_000, 40_000)  # behind the watermark, mostly
            else:
                ts = nominal - rnd.randrange(0, 4_500)
            amount = rnd.choice([10_000.0, 25_000.0]) if rnd.random() < 0.04 else round(
                rnd.uniform(1, 900), 2)
            msg = (p, user.encode(), transaction(f"t{p}-{i}", user, ts, amount, rnd.choice(CITIES)))
            sent.append(msg)
            messages.append(msg)
    messages = [m for group in zip(*streams) for m in group]  # partitions interleaved
    messages += [m for s in streams for m in s[min(map(len, streams)):]]
    last = T0 + per_partition * 400
    messages += [  # partition 0: edges on one user, all in order
        (0, b"edge", transaction("e1", "edge", last, 5.0, ("Oslo", None, None))),
        (0, b"edge", transaction("e2", "edge", last + 59_999, 5.0, ("Paris", None, None))),
        (0, b"edge", transaction("e3", "edge", last + 119_999, 5.0, ("Oslo", None, None))),
    ]
    future = int(time.time() * 1000) + 600_000
    messages.append((1, b"future", transaction("future", "future", future, 1.0)))
    for i in range(flush_users):  # push every partition's watermark past everything above
        messages.append((i % PARTITIONS, f"flush-{i}".encode(),
                         transaction(f"flush-{i}", f"flush-{i}", last + 3_600_000, 1.0)))
    return messages


def decode_inputs(inputs: List[Record]):
    txs, dead = [], []
    for r in inputs:
        reason = dict(MALFORMED).get(r.value)
        if b'"transactionId": "future"' in r.value:
            reason = "future_timestamp"
        if reason:
            dead.append((r.partition, r.offset, reason))
            continue
        d = json.loads(r.value)
        txs.append(Tx(r.partition, r.offset, d["transactionId"], d["userId"], d["amount"],
                      d["location"], d["timestamp"], d.get("lat"), d.get("lon")))
    return txs, sorted(dead)


def alerts_of(records: List[Record]) -> Dict[str, dict]:
    return {a["alertId"]: {k: v for k, v in a.items() if k != "detectedAt"}
            for a in (json.loads(r.value) for r in records)}


def same_alerts(got: Dict[str, dict], want: Dict[str, dict]) -> bool:
    if set(got) != set(want):
        return False
    for key, alert in got.items():
        for field, value in want[key].items():
            if isinstance(value, float) and isinstance(alert.get(field), float):
                if abs(alert[field] - value) > 1e-6 * max(1.0, abs(value)):
                    return False
            elif alert.get(field) != value:
                return False
    return True


async def read_outputs(env, want_alerts, late_count: int, dead_count: int, settle_s: float = 2.0):
    servers = env["KAFKA_BOOTSTRAP_SERVERS"]
    alerts = await read_topic(servers, env["WEIR_TOPIC_FRAUD_ALERTS"], len(want_alerts),
                              timeout_s=90, settle_s=settle_s,
                              until=lambda recs: same_alerts(alerts_of(recs), want_alerts))
    late = await read_topic(servers, env["WEIR_TOPIC_LATE_EVENTS"], late_count, timeout_s=30,
                            settle_s=0.5)
    dead = await read_topic(servers, env["WEIR_TOPIC_DEAD_LETTERS"], dead_count, timeout_s=30,
                            settle_s=0.5)
    return alerts, late, dead


def assert_exact(outputs, txs: List[Tx], dead_expected, env) -> Dict[str, dict]:
    """Alerts and late transactions equal the oracle's over ``txs`` (the records the rules
    read); dead letters are those expected from the input."""
    alert_records, late_records, dead_records = outputs
    want_alerts, want_late = expected(txs, thresholds(env))
    got = alerts_of(alert_records)
    assert len(got) == len(alert_records), "each alert exactly once"
    assert set(got) == set(want_alerts), (sorted(set(got) - set(want_alerts))[:10],
                                          sorted(set(want_alerts) - set(got))[:10])
    assert same_alerts(got, want_alerts), [
        (k, got[k], want_alerts[k]) for k in got if not same_alerts({k: got[k]},
                                                                   {k: want_alerts[k]})][:3]
    for r in alert_records:
        assert r.key == json.loads(r.value)["userId"].encode(), "alerts keyed by userId"
    late = set()
    for r in late_records:
        e = json.loads(r.value)
        assert (e["pipeline"], e["view"]) == ("fraud", "fraud-rules")
        assert e["lateByMs"] == e["watermark"] - e["eventTimestamp"] > 0
        late.add((e["sourcePartition"], e["sourceOffset"], e["watermark"]))
    assert len(late) == len(late_records), "no late record twice"
    assert late == want_late
    dead = sorted((json.loads(r.value)["sourcePartition"], json.loads(r.value)["sourceOffset"],
                   json.loads(r.value)["reason"]) for r in dead_records)
    assert dead == dead_expected
    return want_alerts


def fraud_env(pipeline_env, repartition: bool = False):
    """Repartitioning adds disorder (the forwarder interleaves input partitions batch by
    batch), so the watermark waits longer there."""
    delay_ms = REPARTITION_DELAY_MS if repartition else DELAY_MS
    return {**pipeline_env, "WEIR_FRAUD_MAX_OUT_OF_ORDERNESS_MS": str(delay_ms),
            "WEIR_FRAUD_REPARTITION": "true" if repartition else "false"}


def thresholds(env) -> Thresholds:
    return Thresholds(delay_ms=int(env["WEIR_FRAUD_MAX_OUT_OF_ORDERNESS_MS"]))


def keyed_at_random(messages, seed: int):
    """The same messages keyed by something else than the user; the random users' ones also
    sent to a random partition (the edge and flush ones stay, so they stay in order)."""
    rnd = random.Random(seed)
    return [(rnd.randrange(PARTITIONS) if b'"userId": "u' in v else p,
             f"k{rnd.randrange(1000)}".encode(), v) for p, _, v in messages]


def split_flush(messages):
    return ([m for m in messages if b'"flush-' not in m[2]],
            [m for m in messages if b'"flush-' in m[2]])


async def produce_then_flush(env, worker: Worker, messages, body_sent: bool = False) -> None:
    """The body (unless sent already), then (once the forwarder, if any, has forwarded all of
    it) the transactions that move every partition's watermark past it, so nothing of the
    body is behind them."""
    body, flush = split_flush(messages)
    servers = env["KAFKA_BOOTSTRAP_SERVERS"]
    repartition = env["WEIR_FRAUD_REPARTITION"] == "true"
    if not body_sent and repartition:  # live, not a backlog: the forwarder interleaves the
        # input partitions batch by batch, so a backlog would make most transactions late
        await asyncio.get_running_loop().run_in_executor(None, lambda: wait_for(
            lambda: "[^Worker]: Ready" in worker.log_text(), 60, "the worker to be ready"))
        await stream_slowly(servers, env["WEIR_TOPIC_TRANSACTIONS"], body, chunk=20, pause_s=0.1)
    elif not body_sent:
        await produce(servers, env["WEIR_TOPIC_TRANSACTIONS"], body)
    if repartition:
        valid = len([v for _, _, v in body if v not in dict(MALFORMED)
                     and b'"transactionId": "future"' not in v])
        await read_topic(servers, f"{env['WEIR_APP_ID']}-fraud-by-user", valid, settle_s=0)
    await produce(servers, env["WEIR_TOPIC_TRANSACTIONS"], flush)


async def rules_input(env, inputs: List[Record]):
    """The records the rules read, and the dead letters: with repartitioning, the valid
    transactions as the forwarder wrote them to the by-user topic (lateness is decided in
    that topic's order), every user in one partition of it."""
    txs, dead = decode_inputs(inputs)
    if env["WEIR_FRAUD_REPARTITION"] != "true":
        return txs, dead
    by_user = await read_topic(env["KAFKA_BOOTSTRAP_SERVERS"],
                               f"{env['WEIR_APP_ID']}-fraud-by-user", len(txs), settle_s=1.0)
    forwarded, none_dead = decode_inputs(by_user)
    assert not none_dead and len(forwarded) == len(txs), "each valid transaction forwarded once"
    assert all(r.key == json.loads(r.value)["userId"].encode() for r in by_user)
    homes: Dict[str, set] = {}
    for t in forwarded:
        homes.setdefault(t.user, set()).add(t.partition)
    assert all(len(parts) == 1 for parts in homes.values()), "a user lives in one partition"
    assert any(len({t.partition for t in txs if t.user == u}) > 1 for u in homes), (
        "the input spreads some user over several partitions")
    return forwarded, dead


@pytest.mark.parametrize("repartition", [False, True], ids=["keyed-by-user", "repartitioned"])
async def test_alerts_late_transactions_and_dead_letters_equal_the_batch_oracle(
    pipeline_env, tmp_path, repartition
):
    env = fraud_env(pipeline_env, repartition)
    servers, topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["WEIR_TOPIC_TRANSACTIONS"]
    messages = fixed_input()
    if repartition:
        messages = keyed_at_random(fixed_input(flush_users=40), seed=1)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await asyncio.sleep(1)
        await produce_then_flush(env, worker, messages)
        inputs = await read_topic(servers, topic, len(messages), settle_s=0)
        txs, dead = await rules_input(env, inputs)
        want_alerts, want_late = expected(txs, thresholds(env))
        kinds = {a["type"] for a in want_alerts.values()}
        assert kinds == {"LARGE_AMOUNT", "HIGH_FREQUENCY", "IMPOSSIBLE_TRAVEL"}
        assert len(want_late) < len(txs) / 5, "most transactions go through the ordered rules"
        assert want_late and dead and len({t.id for t in txs}) < len(txs), "input covers each path"
        outputs = await read_outputs(env, want_alerts, len(want_late), len(dead))
        worker.assert_running()
        worker.stop_cleanly()  # a graceful stop exits with status 0
    finally:
        worker.stop()
    want = assert_exact(outputs, txs, dead, env)
    edge = sorted(a["transactionId"] for a in want.values() if a["userId"] == "edge")
    assert edge == ["e2"], "59.999 s apart alerts, 60 s apart does not"
    assert "LARGE_AMOUNT:t" in " ".join(want) and not any(
        a["type"] == "LARGE_AMOUNT" and a["amount"] == 10_000.0 for a in want.values())


@pytest.mark.parametrize("keep_data_dir, repartition", [(True, False), (False, False),
                                                        (False, True)],
                         ids=["data-dir-kept", "data-dir-deleted", "repartitioned"])
async def test_restart_mid_burst_changes_no_output(pipeline_env, tmp_path, keep_data_dir,
                                                   repartition):
    env = fraud_env(pipeline_env, repartition)
    servers, topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["WEIR_TOPIC_TRANSACTIONS"]
    messages = fixed_input(seed=11)
    if repartition:
        messages = keyed_at_random(fixed_input(seed=11, flush_users=40), seed=2)
    body, flush = split_flush(messages)
    sent: List[int] = []
    worker = Worker(env, tmp_path / "worker-1.log").start()
    await asyncio.get_running_loop().run_in_executor(None, lambda: wait_for(
        lambda: "[^Worker]: Ready" in worker.log_text(), 60, "the worker to be ready"))
    producing = asyncio.ensure_future(stream_slowly(servers, topic, body, chunk=30,
                                                    pause_s=0.15, sent=sent))
    try:
        await read_topic(servers, env["WEIR_TOPIC_FRAUD_ALERTS"], 40, timeout_s=90, settle_s=0)
        assert not producing.done(), "the stop should come mid-stream"
        worker.assert_running()
    finally:
        worker.stop_cleanly()
    cut = sent[-1]
    if not keep_data_dir:
        shutil.rmtree(env["WEIR_DATA_DIR"])
    await producing
    worker = Worker(env, tmp_path / "worker-2.log").start()
    try:
        await produce_then_flush(env, worker, messages, body_sent=True)
        inputs = await read_topic(servers, topic, len(messages), settle_s=0)
        txs, dead = await rules_input(env, inputs)
        want_alerts, want_late = expected(txs, thresholds(env))
        outputs = await read_outputs(env, want_alerts, len(want_late), len(dead), settle_s=3.0)
        worker.assert_running()
        worker.stop_cleanly()  # a graceful stop exits with status 0
    finally:
        worker.stop()
    want = assert_exact(outputs, txs, dead, env)
    # the stop came in the middle of a burst: an alert whose window holds transactions
    # sent before and after it
    before = {json.loads(v)["transactionId"] for _, _, v in body[:cut] if v not in dict(MALFORMED)}
    after = {json.loads(v)["transactionId"] for _, _, v in body[cut:] if v not in dict(MALFORMED)}
    assert any(a["type"] == "IMPOSSIBLE_TRAVEL" and a["transactionId"] in after
               and a["previousTransactionId"] in before for a in want.values())


async def test_quiet_stream_evaluates_its_last_transactions_by_the_wall_clock(
    pipeline_env, tmp_path
):
    """With idle advance, nothing after a burst is needed: the wall clock releases it."""
    env = {**fraud_env(pipeline_env), "WEIR_IDLE_TIMEOUT_MS": "2000", "WEIR_IDLE_ADVANCE": "true"}
    servers = env["KAFKA_BOOTSTRAP_SERVERS"]
    burst = [(0, b"quiet", transaction(f"q{i}", "quiet", T0 + i * 1_000, 5.0,
                                       ("Oslo", None, None) if i < 6 else ("Paris", None, None)))
             for i in range(7)]
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await produce(servers, env["WEIR_TOPIC_TRANSACTIONS"], burst)
        # the last transaction is 6 s after the first, the watermark delay 5 s: without the
        # wall clock only q0 would ever be evaluated
        records = await read_topic(servers, env["WEIR_TOPIC_FRAUD_ALERTS"], 2, timeout_s=60,
                                   settle_s=2.0)
        worker.assert_running()
        worker.stop_cleanly()  # a graceful stop exits with status 0
    finally:
        worker.stop()
    got = sorted((a["type"], a["transactionId"], a["count"], a["fromLocation"])
                 for a in (json.loads(r.value) for r in records))
    assert got == [("HIGH_FREQUENCY", "q5", 6, None), ("IMPOSSIBLE_TRAVEL", "q6", None, "Oslo")]


async def test_an_alert_commits_at_the_end_of_its_batch_not_at_the_commit_interval(
    pipeline_env, tmp_path
):
    """Readers wait for alerts: a batch that raised one commits its transaction at its end,
    so a read_committed reader sees it long before a 10 min commit interval would."""
    env = {**fraud_env(pipeline_env), "WEIR_COMMIT_INTERVAL_MS": "600000",
           "WEIR_OFFSETS_COMMIT_INTERVAL_MS": "600000"}
    servers = env["KAFKA_BOOTSTRAP_SERVERS"]
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await produce(servers, env["WEIR_TOPIC_TRANSACTIONS"],
                      [(0, b"big", transaction("big-1", "big", T0, 50_000.0))])
        records = await read_topic(servers, env["WEIR_TOPIC_FRAUD_ALERTS"], 1, timeout_s=60,
                                   settle_s=0)
        worker.assert_running()  # visible while the worker runs, not at its stop's commit
    finally:
        worker.stop()
    assert [(a["type"], a["transactionId"]) for a in (json.loads(r.value) for r in records)] == [
        ("LARGE_AMOUNT", "big-1")]


async def test_buffered_transactions_retention_deleted_before_a_restart_are_named_in_an_error(
    pipeline_env, tmp_path
):
    """After a restart the buffers are read again from the source: offsets its retention
    deleted meanwhile are an error in the log naming them, and what is left is evaluated."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

    env = fraud_env(pipeline_env)
    servers, topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["WEIR_TOPIC_TRANSACTIONS"]
    places = [("Oslo", None, None), ("Oslo", None, None), ("Paris", None, None),
              ("Bergen", None, None)]
    body = [(0, b"r", transaction(f"r{i}", "r", T0 + i * 1_000, 20_000.0 if i == 3 else 5.0,
                                  place)) for i, place in enumerate(places)]
    worker = Worker(env, tmp_path / "worker-1.log").start()
    try:
        await produce(servers, topic, body)
        # r3's LARGE_AMOUNT alert: its batch, and every one before it, has committed
        await read_topic(servers, env["WEIR_TOPIC_FRAUD_ALERTS"], 1, timeout_s=60, settle_s=0)
        worker.assert_running()
    finally:
        worker.stop_cleanly()
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(2)})
    finally:
        await admin.close()
    worker = Worker(env, tmp_path / "worker-2.log").start()
    try:
        await produce(servers, topic, [(0, b"r", transaction("flush", "r", T0 + 60_000, 5.0))])
        records = await read_topic(servers, env["WEIR_TOPIC_FRAUD_ALERTS"], 2, timeout_s=60,
                                   settle_s=2.0)
        worker.assert_running()
        worker.stop_cleanly()  # a graceful stop exits with status 0
    finally:
        worker.stop()
    assert f"{topic}[0] offsets 0..1 are gone (retention)" in worker.log_text()
    got = sorted((a["type"], a["transactionId"], a["previousTransactionId"])
                 for a in (json.loads(r.value) for r in records))
    # r2 and r3 rebuilt from the source and evaluated (the flush waits for the watermark);
    # r0 and r1 are gone, so r2 has no previous transaction to alert on
    assert got == [("IMPOSSIBLE_TRAVEL", "r3", "r2"), ("LARGE_AMOUNT", "r3", None)]
