"""The session engine against hand-worked cases and the session oracle."""

from collections import defaultdict

import pytest
from hypothesis import given, settings, strategies as st

from tables.aggregators import CountAndSum
from tables.engine import Item
from tables.errors import WeirError
from tables.sessions import SessionEngine
from tables.state import InMemoryStore
from tables.windows import SessionWindow
from tests.session_oracle import KeyedEvent, expected_sessions

GAP = 10_000


def make_engine(store=None, gap=GAP, lateness=0, delay=0):
    return SessionEngine(SessionWindow(gap, lateness), delay, CountAndSum(),
                         store if store is not None else InMemoryStore())


def items(*events, first_offset=0):
    """Items from (key, ts) or (key, ts, value) tuples, offsets counted from first_offset."""
    return [Item(first_offset + i, e[1], e[2] if len(e) > 2 else 1.0, None, key=e[0])
            for i, e in enumerate(events)]


def sessions(result):
    return [(s.key, s.start_ms, s.end_ms, s.acc, s.revision) for s in result.emitted]


def retractions(result):
    return [(r.key, r.start_ms, r.end_ms, r.revision) for r in result.retracted]


def test_events_less_than_gap_apart_share_a_session():
    result = make_engine().process(0, items(("a", 0), ("a", 9_999), ("a", 30_000)))
    assert sessions(result) == [("a", 0, 9_999, [2, 2.0], 0)]
    assert result.emitted[0].event_count == 2


def test_events_exactly_gap_apart_start_a_new_session():
    result = make_engine().process(0, items(("a", 0), ("a", 10_000), ("a", 100_000)))
    assert sessions(result) == [("a", 0, 0, [1, 1.0], 0), ("a", 10_000, 10_000, [1, 1.0], 0)]


def test_bridging_out_of_order_event_merges_two_sessions():
    engine = make_engine(delay=60_000)
    engine.process(0, items(("a", 0, 1.0), ("a", 15_000, 2.0), ("a", 7_000, 4.0)))
    result = engine.process(0, items(("a", 500_000), first_offset=3))
    assert sessions(result) == [("a", 0, 15_000, [3, 7.0], 0)]
    assert result.retracted == [] and result.late == []


def test_bridging_event_after_both_fired_retracts_the_later_one():
    engine = make_engine(lateness=30_000)
    first = engine.process(0, items(("a", 0), ("a", 5_000), ("a", 20_000), ("a", 35_000)))
    assert sessions(first) == [("a", 0, 5_000, [2, 2.0], 0), ("a", 20_000, 20_000, [1, 1.0], 0)]
    bridged = engine.process(0, items(("a", 12_000), first_offset=4))
    assert sessions(bridged) == [("a", 0, 20_000, [4, 4.0], 1)]
    assert retractions(bridged) == [("a", 20_000, 20_000, 1)]
    purged = engine.process(0, items(("a", 61_000), ("a", 18_000), first_offset=5))
    assert sessions(purged) == [("a", 35_000, 35_000, [1, 1.0], 0)]
    [late] = purged.late
    assert (late.item.offset, late.window_start_ms, late.window_end_ms, late.watermark_ms) == (
        6, 18_000, 28_000, 61_000)
    assert "a" in engine.store.entries[0]  # [35s] and [61s] are kept


def test_session_fires_when_watermark_reaches_last_event_plus_gap():
    engine = make_engine(delay=5_000)
    before = engine.process(0, items(("a", 0), ("a", 4_000), ("b", 18_999)))
    assert before.emitted == [] and before.watermark_ms == 13_999
    at = engine.process(0, items(("b", 19_000), first_offset=3))
    assert sessions(at) == [("a", 0, 4_000, [2, 2.0], 0)] and at.watermark_ms == 14_000


def test_sessions_fire_oldest_close_time_first():
    result = make_engine().process(0, items(("b", 3_000), ("a", 1_000), ("a", 2_000),
                                            ("c", 0), ("z", 90_000)))
    assert [(s.key, s.end_ms) for s in result.emitted] == [("c", 0), ("a", 2_000), ("b", 3_000)]


def test_event_beyond_allowed_lateness_goes_to_late():
    engine = make_engine(lateness=5_000)
    result = engine.process(0, items(("a", 0), ("x", 12_000), ("a", 500, 2.0),
                                     ("x", 20_000), ("a", 1_000, 4.0)))
    # [0, 0] fires at watermark 12s; the 500 ms event updates it within the lateness
    assert sessions(result) == [("a", 0, 0, [1, 1.0], 0), ("a", 0, 500, [2, 3.0], 1)]
    [late] = result.late  # [0, 500] purged at watermark 20s >= 500 + 10s + 5s
    assert (late.item.offset, late.window_start_ms, late.window_end_ms, late.watermark_ms) == (
        4, 1_000, 11_000, 20_000)
    assert late.late_by_ms == 19_000
    assert "a" not in engine.store.entries[0]  # tombstoned


def test_event_extending_a_fired_session_reopens_it_until_its_new_end_plus_gap():
    engine = make_engine(lateness=60_000)
    fired = engine.process(0, items(("a", 0), ("x", 12_000)))
    assert sessions(fired) == [("a", 0, 0, [1, 1.0], 0)]
    reopened = engine.process(0, items(("a", 9_000), first_offset=2))  # [0, 9s] closes at 19s
    assert reopened.emitted == []
    closed = engine.process(0, items(("x", 19_000), first_offset=3))
    assert sessions(closed) == [("a", 0, 9_000, [2, 2.0], 1)]


def test_event_before_a_fired_session_moves_its_start_and_retracts_the_old_one():
    engine = make_engine(lateness=60_000)
    engine.process(0, items(("a", 5_000), ("x", 20_000)))
    result = engine.process(0, items(("a", 1_000), first_offset=2))
    assert sessions(result) == [("a", 1_000, 5_000, [2, 2.0], 0)]
    assert retractions(result) == [("a", 5_000, 5_000, 1)]


def test_partitions_have_their_own_watermarks():
    engine = make_engine()
    engine.process(0, items(("a", 500_000)))
    result = engine.process(1, items(("a", 5_000)))
    assert result.late == [] and result.emitted == [] and engine.partitions() == [0, 1]


def test_event_without_a_key_is_refused_before_anything_changes():
    engine = make_engine()
    with pytest.raises(WeirError, match="offset 1"):
        engine.process(0, items(("a", 0)) + [Item(1, 5_000, 1.0, None)])
    assert engine.clock(0).next_offset == 0


def test_next_offset_advances_past_inputs_the_engine_never_saw():
    store = InMemoryStore()
    make_engine(store).process(0, items(("a", 5_000)), next_offset=10)
    assert make_engine(store).clock(0).next_offset == 10


def test_forget_reloads_state_from_the_store():
    engine = make_engine()
    engine.process(0, items(("a", 0), ("a", 5_000)))
    engine.forget(0)
    result = engine.process(0, items(("a", 50_000), first_offset=2))
    assert sessions(result) == [("a", 0, 5_000, [2, 2.0], 0)]


RESTART_EVENTS = [("a", 0), ("b", 2_000), ("a", 8_000), ("b", 30_000), ("a", 25_000),
                  ("c", 31_000), ("a", 15_000), ("b", 1_000), ("a", 9_000), ("c", 60_000),
                  ("a", 45_000), ("b", 50_000), ("a", 36_000), ("c", 2_000), ("b", 90_000)]


def run(engine, its, batch_size, partition=0):
    """Emitted, retracted and late outputs of ``its`` fed in batches, and the replays skipped."""
    out, skipped = ([], [], []), 0
    for i in range(0, len(its), batch_size):
        result = engine.process(partition, its[i:i + batch_size])
        for kept, new in zip(out, (result.emitted, result.retracted, result.late)):
            kept += new
        skipped += result.skipped
    return out, skipped


def test_restart_resumes_sessions_from_the_store():
    its = items(*RESTART_EVENTS)
    for lateness in (0, 20_000):
        uninterrupted, _ = run(make_engine(lateness=lateness, delay=3_000), its, 4)
        emitted, retracted, late = uninterrupted
        assert late and (lateness == 0 or retracted and max(e.revision for e in emitted) > 0)
        for split in (1, 4, 7, 10, 14):
            store = InMemoryStore()
            before, _ = run(make_engine(store, lateness=lateness, delay=3_000), its[:split], 3)
            restarted = make_engine(store, lateness=lateness, delay=3_000)
            replay_from = max(0, split - 3)  # uncommitted offsets come again
            after, skipped = run(restarted, its[replay_from:], 2)
            assert skipped == split - replay_from
            assert tuple(b + a for b, a in zip(before, after)) == uninterrupted, f"split {split}"


# ---------------------------------------------------------------- property test

raw_events = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from("abc"), st.integers(0, 12),
              st.integers(0, 40), st.integers(0, 9)),
    max_size=120,
)


def build(raw):
    """Per-partition event times: a rising base with random look-backs (disorder, late)."""
    base, offsets, events = defaultdict(int), defaultdict(int), []
    for partition, key, step, back, value in raw:
        base[partition] += step
        events.append((partition, Item(offsets[partition], base[partition] - back,
                                       float(value), None, key=key)))
        offsets[partition] += 1
    return events


def feed(engine, events, sizes, start=0):
    """Feed the global sequence in chunks; each chunk is split per partition."""
    out, i, n = defaultdict(list), start, 0
    while i < len(events):
        chunk = events[i:i + sizes[n % len(sizes)]]
        i, n = i + len(chunk), n + 1
        by_partition = defaultdict(list)
        for partition, item in chunk:
            by_partition[partition].append(item)
        for partition, its in by_partition.items():
            result = engine.process(partition, its)
            out[partition].append(result)
    return out


def flatten(results):
    return ([e for r in results for e in r.emitted], [x for r in results for x in r.retracted],
            [x for r in results for x in r.late])


def check_against_oracle(events, partition, results, gap, delay, lateness):
    emitted, retracted, late = flatten(results)
    mine = [KeyedEvent(it.offset, it.key, it.ts_ms, int(it.value))
            for p, it in events if p == partition]
    expected = expected_sessions(mine, gap, delay, lateness)
    assert {(x.item.offset, x.window_start_ms, x.window_end_ms, x.watermark_ms)
            for x in late} == expected.late
    revisions, last = defaultdict(list), {}
    for e in emitted:
        revisions[(e.key, e.start_ms)].append(e.revision)
        last[(e.key, e.start_ms)] = (e.end_ms, e.acc[0], int(e.acc[1]))
        assert e.acc[0] == e.event_count
    for ident, revs in revisions.items():
        assert revs == list(range(len(revs))), f"revisions of {ident} not contiguous"
    assert {k: len(v) for k, v in revisions.items()} == expected.emissions
    assert last == expected.last
    assert {(r.key, r.start_ms) for r in retracted} == expected.retracted
    assert all(r.revision == len(revisions[(r.key, r.start_ms)]) for r in retracted)
    assert len(retracted) == len(expected.retracted)  # each retracted once


@settings(max_examples=300, deadline=None)
@given(raw_events, st.lists(st.integers(1, 20), min_size=1, max_size=5),
       st.sampled_from([1, 5, 10]), st.sampled_from([0, 3, 15]), st.sampled_from([0, 7, 30]),
       st.integers(0, 120), st.integers(0, 5))
def test_engine_equals_session_oracle_in_any_batching(raw, sizes, gap, delay, lateness,
                                                      restart_at, replay):
    events = build(raw)
    batched = feed(make_engine(gap=gap, lateness=lateness, delay=delay), events, sizes)
    one_by_one = feed(make_engine(gap=gap, lateness=lateness, delay=delay), events, [1])
    store = InMemoryStore()
    restart_at = min(restart_at, len(events))
    first = feed(make_engine(store, gap, lateness, delay), events[:restart_at], sizes)
    second = feed(make_engine(store, gap, lateness, delay), events,
                  sizes, start=max(0, restart_at - replay))
    for partition in {p for p, _ in events}:
        check_against_oracle(events, partition, batched[partition], gap, delay, lateness)
        reference = flatten(one_by_one[partition])
        assert flatten(batched[partition]) == reference
        assert flatten(first[partition] + second[partition]) == reference
