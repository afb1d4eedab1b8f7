import pytest
from hypothesis import given, strategies as st

from tables.errors import ConfigError
from tables.windows import HoppingWindow, SessionWindow, TumblingWindow

W = TumblingWindow(60_000, 0)


@pytest.mark.parametrize(
    "ts, start",
    [
        (0, 0),
        (1, 0),
        (59_999, 0),  # last millisecond of [0, 60000)
        (60_000, 60_000),  # exactly at a start
        (-1, -60_000),  # negative times floor towards minus infinity
        (-60_000, -60_000),
        (-60_001, -120_000),
        (2**62 + 5, (2**62 + 5) // 60_000 * 60_000),  # huge, no float rounding
    ],
)
def test_event_belongs_to_the_window_floor_ts_over_size(ts, start):
    assert W.start_of(ts) == start
    assert W.end_of(W.start_of(ts)) == start + 60_000


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.integers(1, 10**9))
def test_window_holds_its_timestamp(ts, size):
    w = TumblingWindow(size, 0)
    start = w.start_of(ts)
    assert start <= ts < w.end_of(start)
    assert start % size == 0


@pytest.mark.parametrize("bad", [0, -1, -60_000])
def test_size_not_above_zero_fails_naming_the_parameter(bad):
    with pytest.raises(ConfigError, match=r"Window size \(size_ms\) must be larger than zero"):
        TumblingWindow(bad, 0)


@pytest.mark.parametrize("bad", [1.5, "60000", True, None])
def test_size_that_is_not_an_integer_fails(bad):
    with pytest.raises(ConfigError, match="size_ms"):
        TumblingWindow(bad, 0)


def test_negative_allowed_lateness_fails_naming_it():
    with pytest.raises(ConfigError, match="allowed_lateness_ms"):
        TumblingWindow(60_000, -1)
    with pytest.raises(ConfigError, match="allowed_lateness_ms"):
        SessionWindow(1_000, -1)


@pytest.mark.parametrize(
    "size, advance, match",
    [(60, 0, "advance_ms"), (60, -5, "advance_ms"), (60, 61, "must not exceed"), (0, 10, "size_ms")],
)
def test_invalid_hopping_window_fails_naming_the_parameter(size, advance, match):
    with pytest.raises(ConfigError, match=match):
        HoppingWindow(size, advance, 0)


def test_session_gap_must_be_above_zero():
    with pytest.raises(ConfigError, match="inactivity_gap_ms"):
        SessionWindow(0, 0)


@pytest.mark.parametrize(
    "ts, starts",
    [(45, [0, 20, 40]), (40, [0, 20, 40]), (39, [-20, 0, 20]), (0, [-40, -20, 0]),
     (-1, [-60, -40, -20])],
)
def test_hopping_event_belongs_to_every_window_holding_it(ts, starts):
    assert HoppingWindow(60, 20, 0).starts_of(ts) == starts


@given(st.integers(-(10**15), 10**15), st.integers(1, 10**6), st.integers(1, 10**6))
def test_hopping_windows_are_exactly_those_holding_the_timestamp(ts, a, b):
    size, advance = max(a, b), min(a, b)
    starts = HoppingWindow(size, advance, 0).starts_of(ts)
    assert starts and all(s % advance == 0 and s <= ts < s + size for s in starts)
    assert starts[0] - advance + size <= ts  # the one before no longer holds ts
    assert starts[-1] + advance > ts  # the one after does not yet


@pytest.mark.parametrize("after, upto, fires", [
    (59_999, 60_000, True),  # [0, 60000) ends at 60000: a watermark reaching it fires it
    (60_000, 60_001, False),  # already past that end
    (0, 59_999, False),
    (-1, 0, True),  # [-60000, 0) ends at 0
    (10, 130_000, True),
])
def test_a_tumbling_window_end_is_within_a_watermark_move_when_it_reaches_it(after, upto, fires):
    assert W.ends_within(after, upto) is fires


@given(st.integers(-(10**9), 10**9), st.integers(0, 10**6), st.integers(1, 500),
       st.integers(1, 500))
def test_a_window_ends_within_a_watermark_move_exactly_when_one_of_its_ends_lies_there(
        after, move, a, b):
    """Checked against the ends of the windows holding the timestamps passed over."""
    size, advance = max(a, b), min(a, b)
    upto = after + move
    for window in (TumblingWindow(size, 0), HoppingWindow(size, advance, 0)):
        ends = {window.end_of(s) for ts in range(after - size, min(upto, after + 3 * size) + 1)
                for s in window.starts_of(ts)}
        expected = any(after < e <= upto for e in ends) or move > 3 * size
        assert window.ends_within(after, upto) is expected
