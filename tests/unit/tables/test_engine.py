"""The fixed-window batch engine against hand-worked cases and the batch oracle."""

from hypothesis import given, settings, strategies as st

from tables.aggregators import CountAndSum
from tables.engine import Item, WindowEngine
from tables.state import InMemoryStore
from tables.windows import HoppingWindow, TumblingWindow
from tests.oracle import InputEvent, expected_outputs

SIZE, DELAY = 60_000, 10_000


def make_engine(store=None, size=SIZE, delay=DELAY, lateness=0, advance=None, **kwargs):
    window = HoppingWindow(size, advance, lateness) if advance else TumblingWindow(size, lateness)
    return WindowEngine(window, delay, CountAndSum(), store or InMemoryStore(), **kwargs)


def items(*pairs, first_offset=0):
    return [Item(first_offset + i, ts, amount, None) for i, (ts, amount) in enumerate(pairs)]


def emitted(result):
    return [(e.start_ms, e.revision, e.acc) for e in result.emitted]


def test_window_fires_once_when_watermark_reaches_its_end():
    engine = make_engine()
    r1 = engine.process(0, items((5_000, 10.0), (59_999, 5.0), (69_999, 1.0)))
    assert r1.emitted == []  # watermark 59_999 < 60_000
    r2 = engine.process(0, items((70_000, 2.0), first_offset=3))
    assert emitted(r2) == [(0, 0, [2, 15.0])]
    r3 = engine.process(0, items((200_000, 1.0), first_offset=4))
    assert [e.start_ms for e in r3.emitted] == [60_000]  # [0, 60s) is not emitted again


def test_event_after_window_close_goes_to_late_events():
    engine = make_engine()
    result = engine.process(0, items((5_000, 10.0), (71_000, 1.0), (30_000, 99.0)))
    assert emitted(result) == [(0, 0, [1, 10.0])]
    [late] = result.late
    assert (late.item.offset, late.window_start_ms, late.window_end_ms) == (2, 0, 60_000)
    assert late.watermark_ms == 61_000 and late.late_by_ms == 31_000


def test_event_behind_watermark_in_an_open_window_is_counted():
    engine = make_engine()
    engine.process(0, items((100_000, 1.0), (80_000, 2.0)))  # watermark 90_000 > 80_000
    result = engine.process(0, items((200_000, 0.0), first_offset=2))
    assert emitted(result) == [(60_000, 0, [2, 3.0])]
    assert result.late == []


def test_event_within_allowed_lateness_re_emits_the_window_with_next_revision():
    engine = make_engine(lateness=30_000)
    result = engine.process(0, items((5_000, 1.0), (71_000, 1.0), (30_000, 2.0), (40_000, 4.0)))
    assert emitted(result) == [(0, 0, [1, 1.0]), (0, 1, [2, 3.0]), (0, 2, [3, 7.0])]
    result = engine.process(0, items((100_000, 0.0), (50_000, 8.0), first_offset=4))
    assert result.emitted == [] and [late.item.offset for late in result.late] == [5]


def test_first_event_of_a_window_already_due_emits_revision_zero():
    engine = make_engine(lateness=60_000)
    result = engine.process(0, items((130_000, 1.0), (65_000, 5.0)))  # watermark 120_000
    assert emitted(result) == [(60_000, 0, [1, 5.0])]


def test_hopping_window_event_counts_in_every_window_holding_it():
    engine = make_engine(size=60_000, advance=20_000, delay=0)
    result = engine.process(0, items((45_000, 1.0), (200_000, 0.0)))
    assert [(s, acc) for s, _, acc in emitted(result)] == [
        (0, [1, 1.0]), (20_000, [1, 1.0]), (40_000, [1, 1.0])]


def test_hopping_event_late_for_one_window_is_reported_for_that_window_only():
    engine = make_engine(size=60_000, advance=20_000, delay=0)
    result = engine.process(0, items((70_000, 1.0), (50_000, 1.0)))  # watermark 70_000
    assert [(late.window_start_ms, late.window_end_ms) for late in result.late] == [(0, 60_000)]


def test_future_event_goes_aside_and_does_not_move_the_watermark():
    engine = make_engine(max_future_skew_ms=300_000, wall_clock_ms=lambda: 1_000_000)
    result = engine.process(0, items((900_000, 1.0), (1_300_001, 1.0), (905_000, 1.0)))
    assert [i.offset for i in result.too_far_ahead] == [1]
    assert result.watermark_ms == 895_000 and result.late == []


def test_idle_partition_event_time_follows_the_wall_clock_after_timeout():
    now = [1_000_000]
    engine = make_engine(wall_clock_ms=lambda: now[0])
    engine.process(0, items((5_000, 1.0)))
    now[0] += 30_000
    assert engine.advance_idle(0, now[0], idle_timeout_ms=30_000).emitted == []
    now[0] += 65_000  # 65 s past the timeout: event time 5 s + 65 s, watermark 60 s
    assert emitted(engine.advance_idle(0, now[0], idle_timeout_ms=30_000)) == [(0, 0, [1, 1.0])]


def test_partitions_have_their_own_watermarks():
    engine = make_engine()
    engine.process(0, items((500_000, 1.0)))
    result = engine.process(1, items((5_000, 1.0)))
    assert result.late == [] and result.emitted == []


def test_restart_resumes_watermark_and_skips_replayed_offsets():
    store = InMemoryStore()
    engine = make_engine(store)
    engine.process(0, items((5_000, 1.0), (30_000, 2.0), (75_000, 4.0)))
    restarted = make_engine(store)
    # offsets 0..2 are replayed (not committed before the restart), then new ones follow
    replay = items((5_000, 1.0), (30_000, 2.0), (75_000, 4.0), (10_000, 8.0), (200_000, 0.0))
    result = restarted.process(0, replay)
    assert result.skipped == 3
    assert emitted(result) == [(60_000, 0, [1, 4.0])]
    assert [late.item.offset for late in result.late] == [3]  # [0, 60s) stays closed


def test_restarted_engine_re_indexes_open_windows_and_fires_them():
    store = InMemoryStore()
    make_engine(store).process(0, items((5_000, 1.0), (65_000, 2.0)))
    result = make_engine(store).process(0, items((130_000, 0.0), first_offset=2))
    assert emitted(result) == [(0, 0, [1, 1.0]), (60_000, 0, [1, 2.0])]


def test_closed_windows_are_purged_from_the_store():
    store = InMemoryStore()
    engine = make_engine(store, lateness=10_000)
    engine.process(0, items((5_000, 1.0), (75_000, 1.0)))
    assert "0" in store.entries[0]  # fired, kept for its allowed lateness
    engine.process(0, items((85_000, 1.0), first_offset=2))
    assert "0" not in store.entries[0]


def test_next_offset_advances_past_inputs_the_engine_never_saw():
    store = InMemoryStore()
    engine = make_engine(store)
    engine.process(0, items((5_000, 1.0)), next_offset=10)
    assert make_engine(store).clock(0).next_offset == 10


events = st.lists(
    st.tuples(st.integers(0, 3), st.integers(-200_000, 600_000), st.integers(0, 10_000)),
    max_size=150,
)
shapes = st.sampled_from([(60_000, None, 10_000), (1_000, None, 0), (7, None, 3),
                          (60_000, 20_000, 5_000), (10, 3, 2)])


@settings(max_examples=300, deadline=None)
@given(events, st.integers(1, 40), shapes, st.sampled_from([0, 1, 15_000]), st.integers(0, 150))
def test_batched_engine_equals_batch_oracle(raw, batch_size, shape, lateness, restart_at):
    size, advance, delay = shape
    inputs = [InputEvent(p, i, ts, cents / 100) for i, (p, ts, cents) in enumerate(raw)]
    store = InMemoryStore()
    engine = make_engine(store, size=size, advance=advance, delay=delay, lateness=lateness)
    got, got_late = [], []
    by_partition = {}
    for e in inputs:
        by_partition.setdefault(e.partition, []).append(Item(e.offset, e.ts_ms, e.amount, e))
    for p, its in by_partition.items():
        for i in range(0, len(its), batch_size):
            if i <= restart_at < i + batch_size:  # a restart loses nothing but memory
                engine = make_engine(store, size=size, advance=advance, delay=delay,
                                     lateness=lateness)
            result = engine.process(p, its[i:i + batch_size])
            got += [(p, e.start_ms, e.revision, e.acc[0], round(e.acc[1], 6)) for e in result.emitted]
            got_late += [(p, x.item.offset, x.window_start_ms, x.watermark_ms) for x in result.late]
    expected = expected_outputs(inputs, size, delay, lateness, advance)
    want = [(e.partition, e.start, e.revision, e.count, round(e.total, 6)) for e in expected.emissions]
    assert got == want  # same emissions, same order
    assert got_late == [(x.partition, x.offset, x.window_start, x.watermark) for x in expected.late]
