"""The garbage collector's settings for a long-running process (a worker).

CPython's full collections walk every tracked object, and a worker holds many:
Faust, aiokafka and the modules from start-up, plus its state and the records
of the batches in flight. With the default thresholds a worker that builds such
state spent more time in full collections than in the pipeline (an in-process
run of the fraud stages over 200,000 transactions: 13 s of 21 s in 18 full
collections). Start-up objects are frozen; the fraud pipeline's per-user state
is kept in tuples the collector stops tracking (`agents.fraud_rules`). What a
full collection still walks is mostly the batches in flight (8 partitions x
5,000 records and their decoded forms): 55 to 110 ms, which at every 100th
middle collection came every 2 s at full speed and cost about 10% of the fraud
pipeline's throughput. At every 1,000th they come about every 20 s. Young
objects are still collected as often as before, so short-lived cycles go as
soon as before; cycles that reach the oldest generation wait longer (their
memory stayed within the noise of the runs: peak RSS 367-370 MB either way).

The middle generation is collected at every other young collection (threshold 0:
whenever one young collection happened since the last middle one). A batch's
objects (its fetched records, decoded transactions, releases) outlive a young
collection and die when the batch ends, so with CPython's threshold of 10 each was
walked twice, once young and once in a middle collection of about 6,400 objects
(2.5 ms each, 0.4 us an object: more than half of the collector's time on the fraud
pipeline, which took about a fifth of the worker's CPU; with the collector off the
same run was 25% faster). Now half of them are walked once, in a middle collection
of about 1,400: alternating 1,000,000-transaction runs, 4.5% more throughput and
4.5% less CPU on average (4 pairs). A full collection comes after 10,000 middle
ones, that is after 20,000 young ones (before: 1,000 middle, 10,000 young).

The collector is also off while a round of batches runs (`off_during`, around each
round of the direct path): a round's objects (fetched records, decoded transactions,
releases, per-user lists) die when it ends and are freed by their reference counts,
so a collection that follows walks only what outlived the round, instead of every
batch object once or twice while the round still held it. Four alternating pairs of
1,000,000-transaction fraud runs: 40,300 against 35,800 tx/s on average (+12.6%), CPU
26.2 against 29.4 s (-11%); three more an hour later, on a slower machine: -3%. Over the
seven, +5.9% throughput and -4.2% CPU. A round that lasts longer than ``max_s`` (a commit retried
while the broker is away) gets the collector back then, so cyclic garbage of the
rest of the worker (web requests, timers) cannot pile up meanwhile.
"""

from __future__ import annotations

import asyncio
import gc
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

MIDDLE_EVERY = 0  # middle collection once a young one happened since the last (CPython: 10)
FULL_EVERY = 10_000  # full collection after this many middle-generation ones (CPython: 10)


def tune() -> None:
    """Freeze what exists now (never scanned again), collect the middle generation at every
    other young collection and the full heap rarely, and time every collection
    (`weir_gc_pause_seconds`)."""
    from app.metrics import GC_PAUSES

    _pauses[:] = [GC_PAUSES]  # imported now: never from inside a collection at exit
    gc.freeze()
    young, _, _ = gc.get_threshold()
    gc.set_threshold(young, MIDDLE_EVERY, FULL_EVERY)
    if _time_pause not in gc.callbacks:
        gc.callbacks.append(_time_pause)


_started = [0.0]
_pauses: list = []


def _time_pause(phase: str, info: dict) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    elif _pauses:
        _pauses[0].labels(str(info["generation"])).observe(time.perf_counter() - _started[0])


@asynccontextmanager
async def off_during(max_s: float = 1.0) -> AsyncIterator[None]:
    """The cyclic collector off for the block, at most ``max_s`` (it stays off if it already
    was)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    back_on = asyncio.get_running_loop().call_later(max_s, gc.enable)
    try:
        yield
    finally:
        back_on.cancel()
        gc.enable()
