"""Window definitions: which event-time windows an event belongs to.

Every definition names its defining parameters, the allowed lateness included
(0 chooses no lateness by name, never by a silent default). Timestamps are
integer milliseconds; windows are half-open ``[start, end)``.

Tumbling, size S: ``[N*S, N*S + S)``, one window per event, ``start =
floor(ts / S) * S`` (floors towards minus infinity: ``ts = -1`` is in
``[-S, 0)``)::

    ts:      -1        | 0 ....... S-1 | S ....
    window:  [-S, 0)   | [0, S)        | [S, 2S)

Hopping, size S advancing by A (A <= S): every ``[k*A, k*A + S)`` with
``k*A <= ts < k*A + S``, i.e. ``S / A`` windows per event when A divides S::

    S = 60, A = 20, ts = 45:  [0, 60) [20, 80) [40, 100)

Session, inactivity gap G: per key, events less than G apart belong to one
session; a session ``[first, last]`` closes once event time reaches
``last + G`` (see `tables.sessions`).

A window has fired once the watermark reaches its end; it is kept for
``allowed_lateness_ms`` more, during which a late event updates it and it is
emitted again with the next revision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from tables.errors import ConfigError


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer number of milliseconds, got {value!r}")
    if value < minimum:
        relation = "larger than zero" if minimum == 1 else f"at least {minimum}"
        raise ConfigError(f"{name} must be {relation} milliseconds, got {value}")


@dataclass(frozen=True)
class TumblingWindow:
    """Fixed-size, non-overlapping windows ``[N*size, N*size + size)``."""

    size_ms: int
    allowed_lateness_ms: int

    def __post_init__(self) -> None:
        _check_int("Window size (size_ms)", self.size_ms, 1)
        _check_int("allowed_lateness_ms", self.allowed_lateness_ms, 0)

    def start_of(self, ts_ms: int) -> int:
        """Start of the one window that holds ``ts_ms`` (Python's // floors)."""
        return ts_ms // self.size_ms * self.size_ms

    def starts_of(self, ts_ms: int) -> List[int]:
        return [ts_ms // self.size_ms * self.size_ms]

    def end_of(self, start_ms: int) -> int:
        """Exclusive end of the window that starts at ``start_ms``."""
        return start_ms + self.size_ms

    def ends_within(self, after_ms: int, upto_ms: int) -> bool:
        """True when a window ends in ``(after_ms, upto_ms]``: a watermark moving so fires one."""
        return upto_ms // self.size_ms > after_ms // self.size_ms


@dataclass(frozen=True)
class HoppingWindow:
    """Fixed-size windows ``[k*advance, k*advance + size)`` that overlap when advance < size."""

    size_ms: int
    advance_ms: int
    allowed_lateness_ms: int

    def __post_init__(self) -> None:
        _check_int("Window size (size_ms)", self.size_ms, 1)
        _check_int("Window advance (advance_ms)", self.advance_ms, 1)
        _check_int("allowed_lateness_ms", self.allowed_lateness_ms, 0)
        if self.advance_ms > self.size_ms:
            raise ConfigError(
                f"Window advance (advance_ms={self.advance_ms}) must not exceed "
                f"the window size (size_ms={self.size_ms})"
            )

    def starts_of(self, ts_ms: int) -> List[int]:
        """Starts of every window holding ``ts_ms``, oldest first."""
        last = ts_ms // self.advance_ms * self.advance_ms
        first = ((ts_ms - self.size_ms) // self.advance_ms + 1) * self.advance_ms
        return list(range(first, last + 1, self.advance_ms))

    def end_of(self, start_ms: int) -> int:
        return start_ms + self.size_ms

    def ends_within(self, after_ms: int, upto_ms: int) -> bool:
        """True when a window ends in ``(after_ms, upto_ms]`` (ends: ``k*advance + size``)."""
        return ((upto_ms - self.size_ms) // self.advance_ms
                > (after_ms - self.size_ms) // self.advance_ms)


@dataclass(frozen=True)
class SessionWindow:
    """Per-key sessions separated by at least ``inactivity_gap_ms`` of event time."""

    inactivity_gap_ms: int
    allowed_lateness_ms: int

    def __post_init__(self) -> None:
        _check_int("Session inactivity gap (inactivity_gap_ms)", self.inactivity_gap_ms, 1)
        _check_int("allowed_lateness_ms", self.allowed_lateness_ms, 0)
