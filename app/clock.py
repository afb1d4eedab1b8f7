"""The wall clock, in epoch milliseconds (one place, so tests and tools agree)."""

import time


def wall_clock_ms() -> int:
    return int(time.time() * 1000)
