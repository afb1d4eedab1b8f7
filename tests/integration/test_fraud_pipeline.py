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
from tests.integration.kafka_tools import Record, Worker, produce, read_topic, stream_slowly

pytestmark = pytest.mark.integration

T0 = 1_699_999_980_000
PARTITIONS = 4
DELAY_MS = 5_000
CITIES = [("Oslo", 59.91, 10.75), ("Paris", 48.86, 2.35), ("Oslo", None, None),
          ("Bergen", None, None), ("Paris", None, None), ("Oslo", 59.92, 10.76)]
MALFORMED = [
    (b"{broken json", "invalid_json"),
    (b'{"transactionId":"m","userId":"u","amount":5,"merchantId":"x","location":"Oslo"}',
     "missing_field"),
    (b'{"transactionId":"m","userId":"u","amount":-5,"merchantId":"x","location":"Oslo",'
     b'"timestamp":1}', "invalid_value"),
    (b'{"transactionId":"m","userId":"u","amount":5,"merchantId":"x","location":"Oslo",'
     b'"timestamp":1,"lat":10}', "invalid_value"),
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


def fixed_input(seed: int = 3, per_partition: int = 300) -> List[Tuple[int, bytes, bytes]]:
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
    for p in range(PARTITIONS):  # push every partition's watermark past everything above
        messages.append((p, f"flush-{p}".encode(),
                         transaction(f"flush-{p}", f"flush-{p}", last + 3_600_000, 1.0)))
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


def assert_exact(outputs, inputs) -> Dict[str, dict]:
    alert_records, late_records, dead_records = outputs
    txs, dead_expected = decode_inputs(inputs)
    want_alerts, want_late = expected(txs, Thresholds(delay_ms=DELAY_MS))
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


def fraud_env(pipeline_env):
    return {**pipeline_env, "WEIR_FRAUD_MAX_OUT_OF_ORDERNESS_MS": str(DELAY_MS)}


async def test_alerts_late_transactions_and_dead_letters_equal_the_batch_oracle(
    pipeline_env, tmp_path
):
    env = fraud_env(pipeline_env)
    servers, topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["WEIR_TOPIC_TRANSACTIONS"]
    messages = fixed_input()
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await asyncio.sleep(1)
        await produce(servers, topic, messages)
        inputs = await read_topic(servers, topic, len(messages), settle_s=0)
        txs, dead = decode_inputs(inputs)
        want_alerts, want_late = expected(txs, Thresholds(delay_ms=DELAY_MS))
        kinds = {a["type"] for a in want_alerts.values()}
        assert kinds == {"LARGE_AMOUNT", "HIGH_FREQUENCY", "IMPOSSIBLE_TRAVEL"}
        assert want_late and dead and len({t.id for t in txs}) < len(txs), "input covers each path"
        outputs = await read_outputs(env, want_alerts, len(want_late), len(dead))
        worker.assert_running()
    finally:
        worker.stop()
    want = assert_exact(outputs, inputs)
    edge = sorted(a["transactionId"] for a in want.values() if a["userId"] == "edge")
    assert edge == ["e2"], "59.999 s apart alerts, 60 s apart does not"
    assert "LARGE_AMOUNT:t" in " ".join(want) and not any(
        a["type"] == "LARGE_AMOUNT" and a["amount"] == 10_000.0 for a in want.values())


@pytest.mark.parametrize("keep_data_dir", [True, False], ids=["data-dir-kept", "data-dir-deleted"])
async def test_restart_mid_burst_changes_no_output(pipeline_env, tmp_path, keep_data_dir):
    env = fraud_env(pipeline_env)
    servers, topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["WEIR_TOPIC_TRANSACTIONS"]
    messages = fixed_input(seed=11)
    flush = [m for m in messages if m[1].startswith(b"flush-")]
    body = [m for m in messages if not m[1].startswith(b"flush-")]
    sent: List[int] = []
    worker = Worker(env, tmp_path / "worker-1.log").start()
    producing = asyncio.ensure_future(stream_slowly(servers, topic, body, chunk=30,
                                                    pause_s=0.15, sent=sent))
    try:
        await read_topic(servers, env["WEIR_TOPIC_FRAUD_ALERTS"], 40, timeout_s=90, settle_s=0)
        assert not producing.done(), "the stop should come mid-stream"
        worker.assert_running()
    finally:
        assert worker.stop() == 0
    cut = sent[-1]
    if not keep_data_dir:
        shutil.rmtree(env["WEIR_DATA_DIR"])
    await producing
    await produce(servers, topic, flush)
    worker = Worker(env, tmp_path / "worker-2.log").start()
    try:
        inputs = await read_topic(servers, topic, len(messages), settle_s=0)
        txs, dead = decode_inputs(inputs)
        want_alerts, want_late = expected(txs, Thresholds(delay_ms=DELAY_MS))
        outputs = await read_outputs(env, want_alerts, len(want_late), len(dead), settle_s=3.0)
        worker.assert_running()
    finally:
        worker.stop()
    want = assert_exact(outputs, inputs)
    # the stop came in the middle of a burst: an alert whose window holds transactions
    # sent before and after it
    before = {json.loads(v)["transactionId"] for _, _, v in body[:cut] if v not in dict(MALFORMED)}
    after = {json.loads(v)["transactionId"] for _, _, v in body[cut:] if v not in dict(MALFORMED)}
    assert any(a["type"] == "IMPOSSIBLE_TRAVEL" and a["transactionId"] in after
               and a["previousTransactionId"] in before for a in want.values())
