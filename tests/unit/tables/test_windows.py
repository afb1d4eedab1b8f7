import pytest
from hypothesis import given, strategies as st

from tables.errors import ConfigError
from tables.windows import TumblingWindow

W = TumblingWindow(60_000)


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
    w = TumblingWindow(size)
    start = w.start_of(ts)
    assert start <= ts < w.end_of(start)
    assert start % size == 0


@pytest.mark.parametrize("bad", [0, -1, -60_000])
def test_size_not_above_zero_fails_naming_the_setting(bad):
    with pytest.raises(ConfigError, match="WEIR_ORDER_WINDOW_SIZE_MS"):
        TumblingWindow(bad, setting="WEIR_ORDER_WINDOW_SIZE_MS")


@pytest.mark.parametrize("bad", [1.5, "60000", True, None])
def test_size_that_is_not_an_integer_fails(bad):
    with pytest.raises(ConfigError, match="size_ms"):
        TumblingWindow(bad)
