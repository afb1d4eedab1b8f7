"""Event-time watermark of one source partition (bounded out-of-orderness).

The watermark is the highest event time seen on the partition minus
``max_out_of_orderness_ms``; before the first event there is none. A window
``[start, end)`` is closed once the watermark reaches ``end``::

    events seen:  max_event_ms = 75_000, max_out_of_orderness_ms = 10_000
    watermark:    65_000  ->  [0, 60_000) closed, [60_000, 120_000) open
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tables.errors import ConfigError


@dataclass
class BoundedOutOfOrderness:
    """Watermark that trails the highest event time by a fixed delay."""

    max_out_of_orderness_ms: int
    max_event_ms: Optional[int] = None

    def __post_init__(self) -> None:
        delay = self.max_out_of_orderness_ms
        if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
            raise ConfigError(
                "max_out_of_orderness_ms must be an integer >= 0 milliseconds, "
                f"got {delay!r}"
            )

    @property
    def watermark_ms(self) -> Optional[int]:
        """Current watermark, or None before the first event."""
        if self.max_event_ms is None:
            return None
        return self.max_event_ms - self.max_out_of_orderness_ms

    def observe(self, ts_ms: int) -> None:
        """Advance with one event time; the watermark never goes back."""
        if self.max_event_ms is None or ts_ms > self.max_event_ms:
            self.max_event_ms = ts_ms

    def has_closed(self, window_end_ms: int) -> bool:
        """True once the watermark has reached ``window_end_ms``."""
        wm = self.watermark_ms
        return wm is not None and window_end_ms <= wm
