"""The batch engine against hand-worked cases and the batch oracle."""

from hypothesis import given, settings, strategies as st

from tables.aggregators import CountAndSum
from tables.engine import Item, WindowEngine
from tables.state import InMemoryStore
from tables.windows import TumblingWindow
from tests.oracle import InputEvent, expected_outputs

SIZE, DELAY = 60_000, 10_000


def make_engine(store=None, size=SIZE, delay=DELAY):
    return WindowEngine(TumblingWindow(size), delay, CountAndSum(), store or InMemoryStore())


def items(*pairs, first_offset=0):
    return [Item(first_offset + i, ts, amount, None) for i, (ts, amount) in enumerate(pairs)]


def test_window_is_emitted_once_when_watermark_reaches_its_end():
    engine = make_engine()
    r1 = engine.process(0, items((5_000, 10.0), (59_999, 5.0), (69_999, 1.0)))
    assert r1.closed == []  # watermark 59_999 < 60_000
    r2 = engine.process(0, items((70_000, 2.0), first_offset=3))
    assert [(c.start_ms, c.end_ms, c.acc) for c in r2.closed] == [(0, 60_000, [2, 15.0])]
    r3 = engine.process(0, items((200_000, 1.0), first_offset=4))
    assert [c.start_ms for c in r3.closed] == [60_000]  # [0, 60s) is not emitted again


def test_event_after_window_close_goes_to_late_events():
    engine = make_engine()
    result = engine.process(0, items((5_000, 10.0), (71_000, 1.0), (30_000, 99.0)))
    assert [(c.start_ms, c.acc) for c in result.closed] == [(0, [1, 10.0])]
    [late] = result.late
    assert (late.item.offset, late.window_start_ms, late.window_end_ms) == (2, 0, 60_000)
    assert late.watermark_ms == 61_000 and late.late_by_ms == 31_000


def test_event_behind_watermark_in_an_open_window_is_counted():
    engine = make_engine()
    engine.process(0, items((100_000, 1.0), (80_000, 2.0)))  # watermark 90_000 > 80_000
    result = engine.process(0, items((200_000, 0.0), first_offset=2))
    assert [(c.start_ms, c.acc) for c in result.closed] == [(60_000, [2, 3.0])]
    assert result.late == []


def test_partitions_have_their_own_watermarks():
    engine = make_engine()
    engine.process(0, items((500_000, 1.0)))
    result = engine.process(1, items((5_000, 1.0)))
    assert result.late == [] and result.closed == []


def test_restart_resumes_watermark_and_skips_replayed_offsets():
    store = InMemoryStore()
    engine = make_engine(store)
    engine.process(0, items((5_000, 1.0), (30_000, 2.0), (75_000, 4.0)))
    restarted = make_engine(store)
    # offsets 0..2 are replayed (not committed before the restart), then new ones follow
    replay = items((5_000, 1.0), (30_000, 2.0), (75_000, 4.0), (10_000, 8.0), (200_000, 0.0))
    result = restarted.process(0, replay)
    assert result.skipped == 3
    assert [(c.start_ms, c.acc) for c in result.closed] == [(60_000, [1, 4.0])]
    assert [late.item.offset for late in result.late] == [3]  # [0, 60s) stays closed


def test_next_offset_advances_past_inputs_the_engine_never_saw():
    store = InMemoryStore()
    engine = make_engine(store)
    engine.process(0, items((5_000, 1.0)), next_offset=10)
    assert make_engine(store).state(0).next_offset == 10


def test_forget_reloads_state_from_the_store():
    store = InMemoryStore()
    engine = make_engine(store)
    engine.process(0, items((5_000, 1.0)))
    engine.forget(0)
    assert engine.state(0).windows == {0: [1, 1.0]}


events = st.lists(
    st.tuples(st.integers(0, 3), st.integers(-200_000, 600_000), st.integers(0, 10_000)),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(events, st.integers(1, 50), st.sampled_from([(60_000, 10_000), (1_000, 0), (7, 3)]))
def test_batched_engine_equals_batch_oracle(raw, batch_size, shape):
    size, delay = shape
    inputs = [InputEvent(p, i, ts, cents / 100) for i, (p, ts, cents) in enumerate(raw)]
    engine = make_engine(size=size, delay=delay)
    got_windows, got_late = {}, []
    by_partition = {}
    for e in inputs:
        by_partition.setdefault(e.partition, []).append(Item(e.offset, e.ts_ms, e.amount, e))
    for p, its in by_partition.items():
        for i in range(0, len(its), batch_size):
            result = engine.process(p, its[i:i + batch_size])
            for c in result.closed:
                assert (p, c.start_ms) not in got_windows, "window emitted twice"
                got_windows[(p, c.start_ms)] = (c.acc[0], round(c.acc[1], 6))
            got_late += [(p, late.item.offset, late.window_start_ms, late.watermark_ms)
                         for late in result.late]
    expected = expected_outputs(inputs, size, delay)
    assert got_windows == {k: (n, round(s, 6)) for k, (n, s) in expected.windows.items()}
    assert sorted(got_late) == sorted(
        (x.partition, x.offset, x.window_start, x.watermark) for x in expected.late
    )
