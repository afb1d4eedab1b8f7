import random

import pytest

from tables.engine import Item
from tables.errors import ConfigError
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


@pytest.mark.parametrize("seed", range(200))
def test_releases_match_an_oracle_for_random_batches_and_restarts(seed):
    rnd = random.Random(seed)
    delay = rnd.choice([0, 3, 10])
    events = [(o, rnd.randrange(60), rnd.choice("abc"), f"t{rnd.randrange(1000):03d}")
              for o in range(rnd.randrange(1, 50))]
    cuts = sorted(rnd.sample(range(1, len(events)), min(len(events) - 1, rnd.randrange(6))))
    store = InMemoryStore()
    buf, got = engine(store, delay), []
    for lo, hi in zip([0] + cuts, cuts + [len(events)]):
        if rnd.random() < 0.3:
            buf = engine(store, delay)  # a restart: everything from the store
        batch = [item(o, ts, key, tie) for o, ts, key, tie in events[lo:hi]]
        got.append(released(buf.process(0, batch, next_offset=hi)))
    assert got == expected_by_batch(events, delay, cuts)


def test_restart_resumes_buffers_clock_and_offset_from_the_store():
    store = InMemoryStore()
    first = engine(store)
    first.process(0, [item(0, 10_000), item(1, 12_000)])
    restarted = engine(store)
    assert restarted.clock(0).next_offset == 2 and restarted.buffered(0) == 2
    got = restarted.process(0, [item(1, 12_000), item(2, 20_000)])
    assert got.skipped == 1
    assert released(got) == [("k", 10_000, "t0"), ("k", 12_000, "t1")]


def test_emptied_key_is_deleted_from_the_store():
    store = InMemoryStore()
    buf = engine(store)
    buf.process(0, [item(0, 1_000, key="gone"), item(1, 1_000, key="stays")])
    assert set(store.entries[0]) == {"gone", "stays"}
    buf.process(0, [item(2, 10_000, key="stays")])
    assert set(store.entries[0]) == {"stays"}


def test_idle_partition_follows_the_wall_clock_and_releases_its_last_events():
    buf = engine()
    buf.process(0, [item(0, 100_000)], now_ms=1_000_000)
    assert released(buf.advance_idle(0, 1_030_000, 30_000)) == []
    got = buf.advance_idle(0, 1_035_001, 30_000)
    assert released(got) == [("k", 100_000, "t0")]


def test_out_of_orderness_must_not_be_negative():
    with pytest.raises(ConfigError, match="max_out_of_orderness_ms"):
        OrderedRelease(-1, InMemoryStore())


def test_buffered_values_read_back_after_a_restart_go_through_load_value():
    store = InMemoryStore()
    engine(store).process(0, [item(0, 10_000, tie="a"), item(1, 12_000, tie="b")])
    restarted = OrderedRelease(5_000, store, tie=lambda v: v["id"],
                               load_value=lambda v: {**v, "loaded": True})
    got = restarted.process(0, [item(2, 20_000, tie="c")])
    assert [r.value for r in got.released] == [{"id": "a", "loaded": True},
                                               {"id": "b", "loaded": True}]
