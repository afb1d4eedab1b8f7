"""Repeated Kafka client errors, logged once per interval with a count, not hundreds a second.

While the broker is away every Kafka client of a worker (the consumer, one
transactional producer per source partition, the partition log, the dashboard's
readers) retries its connection and its metadata every 100 ms, and aiokafka logs
each failure: a 23 s outage in the broker restart test wrote 3,500 lines (2,000 of
them "Unable connect to node"), about 20 KB a second for as long as it lasts.

`RepeatThrottle` lets the first record of each message template (per logger)
through, drops the same template for ``interval_s``, and then lets the next one
through with how many it dropped::

    Unable connect to node with id 1: [Errno 111] ...
    ... 10 s later ...
    Unable connect to node with id 1: [Errno 111] ... (and 96 more like it in 10 s)

Only warnings and errors of aiokafka's loggers are throttled; its information
lines and Weir's and Faust's own lines are not.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, Tuple

INTERVAL_S = 10.0


class RepeatThrottle(logging.Filter):
    """A logging filter: one warning or error per (logger, message template) and interval."""

    def __init__(self, interval_s: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._clock = clock
        self._last: Dict[Tuple[str, str], Tuple[float, int]] = {}  # -> (let through, dropped)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True  # what the clients do (a coordinator found...) is not throttled
        key = (record.name, str(record.msg))
        now = self._clock()
        seen = self._last.get(key)
        if seen is not None and now - seen[0] < self.interval_s:
            self._last[key] = (seen[0], seen[1] + 1)
            return False
        self._last[key] = (now, 0)
        if seen is not None and seen[1]:
            text = f"{record.getMessage()} (and {seen[1]} more like it in {now - seen[0]:.0f} s)"
            record.msg, record.args = "%s", (text,)  # whoever formats it gets the text
        return True


def install(prefix: str = "aiokafka") -> RepeatThrottle:
    """Throttle the loggers named ``prefix`` or ``prefix.*`` that exist now (aiokafka's are
    module loggers, created when the app imports it)."""
    throttle = RepeatThrottle()
    manager = logging.Logger.manager
    names = [prefix] + [name for name in list(manager.loggerDict)
                        if name.startswith(prefix + ".")]
    for name in names:
        logging.getLogger(name).addFilter(throttle)
    return throttle
