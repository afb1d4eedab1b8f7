"""Window definitions: which event-time windows an event belongs to.

A tumbling window of size S covers ``[N*S, N*S + S)`` for an integer N, so the
window of a timestamp ``ts`` starts at ``floor(ts / S) * S``. Timestamps are
integer milliseconds; negative timestamps floor towards minus infinity, so
``ts = -1`` with ``S = 60_000`` belongs to ``[-60_000, 0)``::

    ts:     ... -1 | 0 ........ 59_999 | 60_000 ...
    window: [-60000, 0) | [0, 60000)   | [60000, 120000)
"""

from __future__ import annotations

from dataclasses import dataclass

from tables.errors import ConfigError


@dataclass(frozen=True)
class TumblingWindow:
    """Fixed-size, non-overlapping event-time windows ``[start, start + size_ms)``."""

    size_ms: int
    setting: str = "size_ms"

    def __post_init__(self) -> None:
        if isinstance(self.size_ms, bool) or not isinstance(self.size_ms, int):
            raise ConfigError(
                f"{self.setting} must be an integer number of milliseconds, got {self.size_ms!r}"
            )
        if self.size_ms <= 0:
            raise ConfigError(
                f"Window size ({self.setting}) must be larger than zero milliseconds, got {self.size_ms}"
            )

    def start_of(self, ts_ms: int) -> int:
        """Start of the one window that holds ``ts_ms`` (Python's // floors)."""
        return ts_ms // self.size_ms * self.size_ms

    def end_of(self, start_ms: int) -> int:
        """Exclusive end of the window that starts at ``start_ms``."""
        return start_ms + self.size_ms
