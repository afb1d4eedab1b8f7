import random

import pytest

from tables.engine import Item
from tables.errors import ConfigError, WeirError
from tables.ordered import OrderedRelease
from tables.state import InMemoryStore


def item(offset, ts, key="k", tie=None):
    return Item(offset, ts, {"id": tie or f"t{offset}"}, None, key=key)


def released(result):
    return [(r.key, r.ts_ms, r.tie) for r in result.released]


def engine(store=None, delay=5_000):
    return OrderedRelease(delay, store or InMemoryStore(), tie=lambda v: v["id"])


def test_events_are_released_in_event_time_order_once_the_watermark_passes_them():
    buf = engine()
    got = buf.process(0, [item(0, 10_000, tie="b"), item(1, 10_000, tie="a"), item(2, 8_000, tie="c")])
    assert released(got) == [] and got.watermark_ms == 5_000
    got = buf.process(0, [item(3, 16_000, tie="d")])
    assert released(got) == [("k", 8_000, "c"), ("k", 10_000, "a"), ("k", 10_000, "b")]
    assert got.watermark_ms == 11_000


def test_event_behind_the_watermark_on_arrival_is_late_and_not_buffered():
    buf = engine()
    buf.process(0, [item(0, 16_000)])
    got = buf.process(0, [item(1, 10_999), item(2, 11_000)])
    assert [(l.item.offset, l.watermark_ms, l.late_by_ms) for l in got.late] == [(1, 11_000, 1)]
    assert buf.buffered(0) == 2  # 16 s and 11 s (exactly the watermark is not late)


def test_event_at_the_watermark_is_released_only_when_the_watermark_is_past_it():
    buf = engine(delay=0)
    assert released(buf.process(0, [item(0, 100)])) == []
    assert released(buf.process(0, [item(1, 101)])) == [("k", 100, "t0")]


def test_releases_do_not_depend_on_arrival_order_or_batching():
    events = [(0, 3_000, "a"), (1, 1_000, "b"), (2, 7_000, "a"), (3, 2_000, "b"),
              (4, 2_000, "a"), (5, 30_000, "a")]
    one = engine()
    whole = released(one.process(0, [item(o, ts, k) for o, ts, k in events]))
    other = engine()
    shuffled = [events[i] for i in (3, 1, 4, 0, 2, 5)]
    piecewise = []
    for o, (_, ts, k) in enumerate(shuffled):
        piecewise += released(other.process(0, [item(o, ts, k, tie=f"t{events.index((_, ts, k))}")]))
    assert whole == piecewise
    assert [ts for _, ts, _ in whole] == [1_000, 2_000, 2_000, 3_000, 7_000]


def expected_by_batch(events, delay, cuts):
    """Oracle: event by event, late if behind the watermark of the events before it; at the
    end of each batch, every kept event the watermark passed, in (ts, tie, key) order."""
    max_ts, waiting, out = None, [], []
    for lo, hi in zip([0] + cuts, cuts + [len(events)]):
        for offset, ts, key, tie in events[lo:hi]:
            if max_ts is not None and ts < max_ts - delay:
                continue  # late
            waiting.append((ts, tie, key, offset))
            max_ts = ts if max_ts is None else max(max_ts, ts)
        due = sorted(e for e in waiting if max_ts is not None and e[0] < max_ts - delay)
        waiting = [e for e in waiting if e not in due]
        out.append([(key, ts, tie) for ts, tie, key, _ in due])
    return out


def restarted(store, log, delay=5_000):
    """A new engine on ``store`` whose buffers are replayed from ``log`` (every record of the
    source, dropped ones too, as the caller decodes them)."""
    buf = engine(store, delay)
    span = buf.replay_span(0)
    if span is not None:
        start, end = span
        buf.replay(0, [i for i in log if start <= i.offset < end], span)
    return buf


@pytest.mark.parametrize("seed", range(200))
def test_releases_match_an_oracle_for_random_batches_drops_and_restarts(seed):
    rnd = random.Random(seed)
    delay = rnd.choice([0, 3, 10])
    events = [(o, rnd.randrange(60), rnd.choice("abc"), f"t{rnd.randrange(1000):03d}")
              for o in range(rnd.randrange(1, 50))]
    dropped = {o for o, *_ in events if rnd.random() < 0.15}  # duplicates, say
    cuts = sorted(rnd.sample(range(1, len(events)), min(len(events) - 1, rnd.randrange(6))))
    log = [item(o, ts, key, tie) for o, ts, key, tie in events]
    store = InMemoryStore()
    buf, got = engine(store, delay), []
    for lo, hi in zip([0] + cuts, cuts + [len(events)]):
        if rnd.random() < 0.3:
            buf = restarted(store, log, delay)
        batch = [i for i in log[lo:hi] if i.offset not in dropped]
        gone = [i.offset for i in log[lo:hi] if i.offset in dropped]
        got.append(released(buf.process(0, batch, next_offset=hi, dropped=gone)))
    kept = [e for e in events if e[0] not in dropped]
    cuts_kept = [sum(1 for e in kept if e[0] < c) for c in cuts]
    assert got == expected_by_batch(kept, delay, cuts_kept)


def test_restart_replays_the_buffered_events_from_the_source_and_skips_what_it_did():
    store = InMemoryStore()
    log = [item(0, 10_000), item(1, 2_000), item(2, 12_000), item(3, 11_000)]
    first = engine(store)
    first.process(0, log[:3])  # watermark 7 s: 2 s released at once
    first.process(0, log[3:], dropped=[])
    restarted_ = engine(store)
    assert restarted_.clock(0).next_offset == 4 and restarted_.replay_span(0) == (0, 4)
    assert restarted_.replay(0, log, (0, 4)) == 3  # not 2 s: behind the watermark
    got = restarted_.process(0, [item(3, 11_000), item(4, 20_000)])
    assert got.skipped == 1
    assert released(got) == [("k", 10_000, "t0"), ("k", 11_000, "t3"), ("k", 12_000, "t2")]


def test_a_batch_writes_the_meta_only_and_replays_from_the_oldest_buffered_offset():
    store = InMemoryStore()
    buf = engine(store)
    buf.process(0, [item(0, 5_000, key="a"), item(1, 9_000, key="b")], dropped=[])
    assert store.entries.get(0, {}) == {}
    assert store.meta[0]["replayFrom"] == 0 and store.meta[0]["replayWatermarkMs"] == 4_000
    buf.process(0, [item(3, 10_500, key="a")], next_offset=4, dropped=[2])
    assert store.meta[0]["replayFrom"] == 1 and store.meta[0]["dropped"] == [2]
    buf.process(0, [item(4, 30_000)])
    assert store.meta[0]["replayFrom"] == 4 and "dropped" not in store.meta[0]
    buf.process(0, [item(5, 40_000)])
    assert store.meta[0]["replayFrom"] == 5


def test_dropped_offsets_are_not_buffered_again_by_a_replay():
    store = InMemoryStore()
    log = [item(0, 10_000, tie="a"), item(1, 10_000, tie="dup"), item(2, 11_000, tie="b")]
    engine(store).process(0, [log[0], log[2]], dropped=[1])
    buf = restarted(store, log)
    assert released(buf.process(0, [item(3, 30_000)])) == [("k", 10_000, "a"),
                                                            ("k", 11_000, "b")]


def test_a_batch_before_the_replay_is_refused_and_a_stale_replay_ignored():
    store = InMemoryStore()
    engine(store).process(0, [item(0, 10_000)])
    buf = engine(store)
    with pytest.raises(WeirError, match="replayed from offsets 0..0"):
        buf.process(0, [item(1, 20_000)])
    assert buf.replay(0, [item(0, 10_000)], (0, 7)) == 0 and buf.replay_span(0) == (0, 1)
    assert buf.replay(0, [item(0, 10_000)], (0, 1)) == 1 and buf.replay_span(0) is None


def test_a_long_replay_can_come_in_pieces():
    store = InMemoryStore()
    log = [item(o, 10_000 + o) for o in range(6)]
    engine(store).process(0, log)
    buf = engine(store)
    assert buf.replay(0, log[:4], (0, 6), final=False) == 4 and buf.replay_span(0) == (0, 6)
    assert buf.replay(0, log[3:], (0, 6)) == 2 and buf.replay_span(0) is None
    assert buf.buffered(0) == 6


def test_buffers_an_earlier_version_stored_are_released_rewritten_then_deleted():
    store = InMemoryStore()
    store.meta[0] = {"maxEventMs": 12_000, "nextOffset": 2}
    store.entries[0] = {"a": [[10_000, "t0", {"id": "t0"}], [12_000, "t1", {"id": "t1"}]]}
    buf = OrderedRelease(5_000, store, tie=lambda v: v["id"],
                         load_value=lambda v: {**v, "loaded": True})
    assert buf.replay_span(0) is None and buf.buffered(0) == 2
    got = buf.process(0, [item(2, 16_000, key="a")])
    assert [r.value for r in got.released] == [{"id": "t0", "loaded": True}]
    assert store.entries[0] == {"a": [(12_000, "t1", {"id": "t1", "loaded": True})]}
    assert store.meta[0]["replayFrom"] == 2
    got = buf.process(0, [item(3, 30_000, key="a")])
    assert released(got) == [("a", 12_000, "t1"), ("a", 16_000, "t2")]
    assert store.entries[0] == {}


def test_idle_partition_follows_the_wall_clock_and_releases_its_last_events():
    buf = engine()
    buf.process(0, [item(0, 100_000)], now_ms=1_000_000)
    assert released(buf.advance_idle(0, 1_030_000, 30_000)) == []
    got = buf.advance_idle(0, 1_035_001, 30_000)
    assert released(got) == [("k", 100_000, "t0")]


def test_out_of_orderness_must_not_be_negative():
    with pytest.raises(ConfigError, match="max_out_of_orderness_ms"):
        OrderedRelease(-1, InMemoryStore())
