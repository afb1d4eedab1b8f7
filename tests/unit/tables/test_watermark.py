import pytest

from tables.errors import ConfigError
from tables.watermark import BoundedOutOfOrderness


def test_watermark_is_highest_event_time_minus_out_of_orderness():
    wm = BoundedOutOfOrderness(10_000)
    assert wm.watermark_ms is None
    wm.observe(75_000)
    wm.observe(20_000)  # out of order: does not move it back
    assert wm.watermark_ms == 65_000


def test_window_closes_when_watermark_reaches_its_end_exactly():
    wm = BoundedOutOfOrderness(10_000)
    wm.observe(69_999)
    assert not wm.has_closed(60_000)
    wm.observe(70_000)
    assert wm.has_closed(60_000)


def test_nothing_is_closed_before_the_first_event():
    assert not BoundedOutOfOrderness(0).has_closed(-(2**63))


@pytest.mark.parametrize("bad", [-1, 1.0, "10", None])
def test_negative_or_non_integer_delay_fails_naming_the_setting(bad):
    with pytest.raises(ConfigError, match="max_out_of_orderness_ms"):
        BoundedOutOfOrderness(bad)
