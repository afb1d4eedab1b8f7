"""The pageview pipeline through a real broker and real workers, against batch oracles.

Tumbling and hopping windows are checked record for record against
`tests.pageview_oracle`, sessions against `tests.session_oracle`, late
pageviews and dead letters by position.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import time
from typing import Dict, List, Tuple

import pytest

from tests.integration.hostile import HOSTILE_PAGEVIEWS
from tests.integration.kafka_tools import (Record, Worker, mid_stream_split, produce, read_topic,
                                           redeliver_some, stream_slowly)
from tests.pageview_oracle import View, expected_windows
from tests.session_oracle import KeyedEvent, expected_sessions

pytestmark = pytest.mark.integration

SIZE_MS, HOP_SIZE_MS, HOP_ADVANCE_MS, GAP_MS, DELAY_MS = 60_000, 180_000, 60_000, 30_000, 10_000
T0 = 1_699_999_980_000
PARTITIONS = 4
PAGES = ["/", "/search", "/cart", "/help"] + [f"/p/{i}" for i in range(12)]
REFERRERS = [None, None, "https://a.example/", "https://b.example/", "https://c.example/"]
MALFORMED = [
    (b"{broken json", "invalid_json"),
    (b"\xc3\x28 not utf-8", "invalid_utf8"),
    (b'{"sessionId":"m","timestamp":1}', "missing_field"),
    (b'{"sessionId":"m","page":7,"timestamp":1}', "wrong_type"),
    (b'{"sessionId":"","page":"/","timestamp":1}', "invalid_value"),
    (b'"text"', "wrong_shape"),
]
KNOWN_BAD = {**dict(MALFORMED), **dict(HOSTILE_PAGEVIEWS)}  # payload -> dead-letter reason


def pageview(session: str, ts: int, page: str, referrer=None, user=None) -> bytes:
    return json.dumps({"sessionId": session, "userId": user, "page": page,
                       "referrer": referrer, "timestamp": ts, "userAgent": "test"}).encode()


def fixed_input(seed: int = 5, per_partition: int = 300) -> List[Tuple[int, bytes, bytes]]:
    """Visits interleaved per partition, disorder below the watermark delay, pauses longer
    than the session gap, late and malformed pageviews; session edge cases on partition 0."""
    rnd = random.Random(seed)
    messages = []
    for p in range(PARTITIONS):
        visits: Dict[str, int] = {}  # session -> pageviews left
        users = {}
        seen = set()
        valid: List[Tuple[int, bytes, bytes]] = []
        started = 0
        for i in range(per_partition):
            if len(visits) < 5:
                sid = f"s{p}-{started}"
                started += 1
                visits[sid] = rnd.randrange(1, 25)
                users[sid] = rnd.choice([None, None, f"u{rnd.randrange(8)}"])
            sid = rnd.choice(sorted(visits))
            nominal = T0 + i * 700
            roll = rnd.random()
            if roll < 0.03:
                messages.append((p, sid.encode(), rnd.choice(MALFORMED)[0]))
                continue
            if roll < 0.08:
                ts = nominal - rnd.randrange(70_000, 200_000)  # late for some windows
            else:
                ts = nominal - rnd.randrange(0, 9_000)
            first = sid not in seen
            seen.add(sid)
            valid.append((p, sid.encode(), pageview(
                sid, ts, rnd.choice(PAGES[:4] if rnd.random() < 0.5 else PAGES),
                rnd.choice(REFERRERS) if first or rnd.random() < 0.2 else None, users[sid])))
            messages.append(valid[-1])
            redeliver_some(rnd, messages, valid)
            visits[sid] -= 1
            if visits[sid] <= 0:
                del visits[sid]
    t = T0 + per_partition * 700 + 100_000
    messages += [  # partition 0: sessions at the gap's edge, and a bridge out of order
        (0, b"edge", pageview("edge", t, "/a")),
        (0, b"edge", pageview("edge", t + GAP_MS, "/b")),  # exactly the gap: a new session
        (0, b"bridge", pageview("bridge", t + 1_000, "/x", "https://a.example/")),
        (0, b"bridge", pageview("bridge", t + 1_000 + 35_000, "/z")),  # 35 s apart: two sessions
        (0, b"bridge", pageview("bridge", t + 1_000 + 17_000, "/y")),  # arrives before either closes
        (0, b"tie", pageview("tie", t + 2_000, "/first")),
        (0, b"tie", pageview("tie", t + 2_000, "/second")),  # same time: entry is the earlier offset
    ]
    future = int(time.time() * 1000) + 600_000
    messages.append((1, b"future", pageview("future", future, "/")))
    for p in range(PARTITIONS):  # push every partition's watermark past everything above
        messages.append((p, f"flush-{p}".encode(), pageview(f"flush-{p}", t + 20 * SIZE_MS, "/")))
    return messages


def decode_inputs(inputs: List[Record]):
    """Pageviews and dead letters; a (sessionId, timestamp, page) already delivered on its
    partition counts once."""
    views, dead, seen = [], [], set()
    for r in inputs:
        reason = KNOWN_BAD.get(r.value)
        if reason is None and b'"sessionId": "future"' in r.value:
            reason = "future_timestamp"
        if reason:
            dead.append((r.partition, r.offset, reason))
            continue
        d = json.loads(r.value)
        identity = (r.partition, d["sessionId"], d["timestamp"], d["page"])
        if identity in seen:
            continue
        seen.add(identity)
        views.append(View(r.partition, r.offset, d["timestamp"], d["sessionId"], d["userId"],
                          d["page"], d["referrer"]))
    return views, sorted(dead)


def expected_session_records(views: List[View]):
    by_offset = {(v.partition, v.offset): v for v in views}
    sessions, late = {}, set()
    for p in range(PARTITIONS):
        keyed = [KeyedEvent(v.offset, v.session_id, v.ts_ms, v.offset)
                 for v in views if v.partition == p]
        got = expected_sessions(keyed, GAP_MS, DELAY_MS, 0)
        late |= {("pageview-sessions", p, off, start, end, wm) for off, start, end, wm in got.late}
        for (sid, start), (end, n, _) in got.final_sessions().items():
            members = sorted((by_offset[(p, off)] for off in got.members[(sid, start)]),
                             key=lambda v: (v.ts_ms, v.offset))
            entry, exit_ = members[0], members[-1]
            sessions[(sid, start)] = {
                "sessionId": sid, "sessionStart": start, "sessionEnd": end,
                "durationMs": end - start, "pageViews": n, "entryPage": entry.page,
                "exitPage": exit_.page, "referrer": entry.referrer, "userId": entry.user_id}
    return sessions, late


def expected_all(views: List[View]):
    tumbling, late_t = expected_windows(views, SIZE_MS, SIZE_MS, DELAY_MS)
    hopping, late_h = expected_windows(views, HOP_SIZE_MS, HOP_ADVANCE_MS, DELAY_MS)
    sessions, late_s = expected_session_records(views)
    late = ({("pageviews-tumbling",) + x for x in late_t} | {("pageviews-hopping",) + x
                                                              for x in late_h} | late_s)
    return {"tumbling": tumbling, "hopping": hopping}, sessions, late


def final_records(records: List[Record], key_of) -> Tuple[Dict, Dict]:
    """The highest revision per key, and every key's revisions in arrival order."""
    revisions: Dict = {}
    final: Dict = {}
    for r in records:
        m = json.loads(r.value)
        key = key_of(m)
        revisions.setdefault(key, []).append(m["revision"])
        if m["revision"] == max(revisions[key]):
            final[key] = m
    return final, revisions


def window_outputs(records: List[Record]):
    final, revisions = final_records(records, lambda m: (m["window"], m["windowStart"]))
    got = {"tumbling": {}, "hopping": {}}
    for (kind, start), m in final.items():
        got[kind][start] = {k: v for k, v in m.items() if k not in ("window", "revision")}
    return got, revisions


def session_outputs(records: List[Record]):
    final, revisions = final_records(records, lambda m: (m["sessionId"], m["sessionStart"]))
    got = {k: {f: v for f, v in m.items() if f not in ("revision", "retracted")}
           for k, m in final.items() if not m["retracted"]}
    return got, revisions


async def read_outputs(env, want_windows, want_sessions, late_count, dead_count, settle_s=2.0):
    servers = env["KAFKA_BOOTSTRAP_SERVERS"]
    metrics = await read_topic(
        servers, env["WEIR_TOPIC_PAGEVIEW_METRICS"],
        sum(len(w) for w in want_windows.values()), timeout_s=90, settle_s=settle_s,
        until=lambda recs: window_outputs(recs)[0] == want_windows)
    sessions = await read_topic(servers, env["WEIR_TOPIC_USER_SESSIONS"], len(want_sessions),
                                timeout_s=60, settle_s=settle_s,
                                until=lambda recs: session_outputs(recs)[0] == want_sessions)
    late = await read_topic(servers, env["WEIR_TOPIC_LATE_EVENTS"], late_count, timeout_s=30,
                            settle_s=0.5)
    dead = await read_topic(servers, env["WEIR_TOPIC_DEAD_LETTERS"], dead_count, timeout_s=30,
                            settle_s=0.5)
    return metrics, sessions, late, dead


def assert_exact(outputs, inputs):
    metrics, session_records, late_records, dead_records = outputs
    views, dead_expected = decode_inputs(inputs)
    want_windows, want_sessions, want_late = expected_all(views)
    windows, window_revisions = window_outputs(metrics)
    assert windows == want_windows, window_diff(windows, want_windows)
    assert all(revs == [0] for revs in window_revisions.values()), "each window exactly once"
    sessions, session_revisions = session_outputs(session_records)
    assert sessions == want_sessions
    assert all(revs == [0] for revs in session_revisions.values()), "each session exactly once"
    late = set()
    for r in late_records:
        e = json.loads(r.value)
        assert e["pipeline"] == "pageviews" and e["lateByMs"] == e["watermark"] - e["eventTimestamp"]
        late.add((e["view"], e["sourcePartition"], e["sourceOffset"], e["windowStart"],
                  e["windowEnd"], e["watermark"]))
    assert len(late) == len(late_records), "no late record twice"
    assert late == want_late
    dead = sorted((json.loads(r.value)["sourcePartition"], json.loads(r.value)["sourceOffset"],
                   json.loads(r.value)["reason"]) for r in dead_records)
    assert dead == dead_expected


def window_diff(got, want) -> str:
    """What differs, window by window: missing, unexpected, and the fields that differ."""
    lines = []
    for kind in ("tumbling", "hopping"):
        for start in sorted(set(got[kind]) | set(want[kind])):
            g, w = got[kind].get(start), want[kind].get(start)
            if g == w:
                continue
            if g is None or w is None:
                lines.append(f"{kind} {start}: {'missing' if g is None else 'unexpected'}")
                continue
            fields = {k: (g[k], w[k]) for k in w if g.get(k) != w[k] and k not in
                      ("topPages", "topReferrers")}
            lines.append(f"{kind} {start}: got/want {fields}")
    return "\n".join(lines)


def pageview_env(pipeline_env):
    return {**pipeline_env, "WEIR_PAGEVIEW_WINDOW_SIZE_MS": str(SIZE_MS),
            "WEIR_PAGEVIEW_HOP_SIZE_MS": str(HOP_SIZE_MS),
            "WEIR_PAGEVIEW_HOP_ADVANCE_MS": str(HOP_ADVANCE_MS),
            "WEIR_SESSION_GAP_MS": str(GAP_MS), "WEIR_MAX_OUT_OF_ORDERNESS_MS": str(DELAY_MS)}


async def test_windows_sessions_late_and_dead_letters_equal_the_batch_oracles(
    pipeline_env, tmp_path
):
    env = pageview_env(pipeline_env)
    servers, topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["WEIR_TOPIC_PAGEVIEWS"]
    messages = fixed_input()
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await asyncio.sleep(1)
        await produce(servers, topic, messages)
        inputs = await read_topic(servers, topic, len(messages), settle_s=0)
        views, dead = decode_inputs(inputs)
        want_windows, want_sessions, want_late = expected_all(views)
        # the input covers each path
        assert len(want_windows["tumbling"]) > 5 and len(want_windows["hopping"]) > 5
        assert len(want_sessions) > 40 and want_late and dead
        assert len(views) + len(dead) < len(inputs)  # upstream re-deliveries
        outputs = await read_outputs(env, want_windows, want_sessions, len(want_late), len(dead))
        worker.assert_running()
        worker.stop_cleanly()  # a graceful stop exits with status 0
    finally:
        worker.stop()
    assert_exact(outputs, inputs)
    sessions = session_outputs(outputs[1])[0]
    edge = sorted(s["sessionStart"] for (sid, _), s in sessions.items() if sid == "edge")
    assert len(edge) == 2 and edge[1] - edge[0] == GAP_MS, "a gap of exactly the threshold splits"
    bridge = [s for (sid, _), s in sessions.items() if sid == "bridge"]
    assert [(b["pageViews"], b["entryPage"], b["exitPage"]) for b in bridge] == [(3, "/x", "/z")]
    tie = [s for (sid, _), s in sessions.items() if sid == "tie"]
    assert [(t["entryPage"], t["exitPage"], t["durationMs"]) for t in tie] == [
        ("/first", "/second", 0)]


@pytest.mark.parametrize("keep_data_dir", [True, False], ids=["data-dir-kept", "data-dir-deleted"])
async def test_restart_mid_session_and_mid_hopping_window_changes_no_output(
    pipeline_env, tmp_path, keep_data_dir
):
    env = pageview_env(pipeline_env)
    servers, topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["WEIR_TOPIC_PAGEVIEWS"]
    messages = fixed_input(seed=13)
    flush = [m for m in messages if m[1].startswith(b"flush-")]
    body = [m for m in messages if not m[1].startswith(b"flush-")]
    first, rest = mid_stream_split(body)
    sent = [0]
    worker = await Worker(env, tmp_path / "worker-1.log").start().wait_ready()
    producing = asyncio.ensure_future(
        stream_slowly(servers, topic, first, chunk=30, pause_s=0.15, sent=sent))
    try:
        await read_topic(servers, env["WEIR_TOPIC_PAGEVIEW_METRICS"], 1, timeout_s=90, settle_s=0)
        worker.assert_running()
    finally:
        worker.stop_cleanly()
    body = first + rest  # in the order sent: the first ``cut`` before the stop
    cut = sent[-1]
    if not keep_data_dir:
        shutil.rmtree(env["WEIR_DATA_DIR"])
    await producing
    await stream_slowly(servers, topic, rest, chunk=30, pause_s=0.15)
    await produce(servers, topic, flush)
    worker = Worker(env, tmp_path / "worker-2.log").start()
    try:
        inputs = await read_topic(servers, topic, len(messages), settle_s=0)
        views, dead = decode_inputs(inputs)
        want_windows, want_sessions, want_late = expected_all(views)
        outputs = await read_outputs(env, want_windows, want_sessions, len(want_late), len(dead),
                                     settle_s=3.0)
        worker.assert_running()
        worker.stop_cleanly()  # a graceful stop exits with status 0
    finally:
        worker.stop()
    assert_exact(outputs, inputs)
    # the stop came in the middle of sessions and of hopping windows
    good = [json.loads(v) for _, _, v in body if v not in dict(MALFORMED)]
    cut_good = len([v for _, _, v in body[:cut] if v not in dict(MALFORMED)])
    before = {v["sessionId"] for v in good[:cut_good]}
    after = {v["sessionId"] for v in good[cut_good:]}
    assert before & after, "some session spans the restart"
    cut_ts = max(v["timestamp"] for v in good[:cut_good])
    assert any(s < cut_ts < s + HOP_SIZE_MS for s in want_windows["hopping"])
