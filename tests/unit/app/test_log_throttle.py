"""Repeated client errors: once per interval per template, then with how many were dropped."""

import importlib
import logging

from app import log_throttle
from app.log_throttle import RepeatThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def records(logger_name, throttle, clock, script):
    """Log ``script`` ((seconds later, template, args) ...) through the throttle; return the
    lines that got through."""
    logger = logging.getLogger(logger_name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    got = []
    handler = logging.Handler()
    handler.emit = lambda record: got.append(record.getMessage())
    logger.addHandler(handler)
    logger.addFilter(throttle)
    try:
        for later, template, args, *level in script:
            clock.now += later
            logger.log(level[0] if level else logging.ERROR, template, *args)
    finally:
        logger.removeFilter(throttle)
        logger.removeHandler(handler)
    return got


def test_a_repeated_template_passes_once_per_interval_with_the_count_it_dropped():
    clock = Clock()
    throttle = RepeatThrottle(interval_s=10, clock=clock)
    script = [(0.1, "Unable connect to node with id %s: %s", (1, "refused"))] * 50
    script += [(6.0, "Unable connect to node with id %s: %s", (1, "refused"))]
    got = records("unit.throttle.a", throttle, clock, script)
    assert got == ["Unable connect to node with id 1: refused",
                   "Unable connect to node with id 1: refused (and 49 more like it in 11 s)"]


def test_other_templates_and_other_loggers_are_counted_apart():
    clock = Clock()
    throttle = RepeatThrottle(interval_s=10, clock=clock)
    got = records("unit.throttle.b", throttle, clock,
                  [(0, "metadata failed", ()), (0, "fetch failed %s", (1,)),
                   (0, "metadata failed", ()), (0, "fetch failed %s", (2,))])
    got += records("unit.throttle.c", throttle, clock, [(0, "metadata failed", ())])
    assert got == ["metadata failed", "fetch failed 1", "metadata failed"]


def test_information_lines_are_never_throttled():
    clock = Clock()
    throttle = RepeatThrottle(interval_s=10, clock=clock)
    got = records("unit.throttle.d", throttle, clock,
                  [(0, "Discovered coordinator for %s", (tid,), logging.INFO) for tid in "abc"])
    assert got == ["Discovered coordinator for a", "Discovered coordinator for b",
                   "Discovered coordinator for c"]


def test_install_throttles_the_kafka_clients_loggers_only():
    importlib.import_module("aiokafka.consumer.fetcher")  # its module logger exists now
    throttle = log_throttle.install()
    try:
        assert throttle in logging.getLogger("aiokafka").filters  # the client's
        assert throttle in logging.getLogger("aiokafka.consumer.fetcher").filters
        assert throttle not in logging.getLogger("app.sinks").filters
    finally:
        for name in list(logging.Logger.manager.loggerDict):
            if name == "aiokafka" or name.startswith("aiokafka."):
                logging.getLogger(name).removeFilter(throttle)
