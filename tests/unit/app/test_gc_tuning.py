"""The worker's GC settings: rarer full collections, every pause timed for /metrics."""

import asyncio
import gc

from app import gc_tuning
from app.metrics import GC_PAUSES


def _count(generation: str) -> float:
    for metric in GC_PAUSES.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count") and sample.labels == {"generation": generation}:
                return sample.value
    return 0.0


def test_every_collection_is_timed_and_full_ones_are_rarer():
    thresholds = gc.get_threshold()
    try:
        gc_tuning.tune()
        gc_tuning.tune()  # twice: still one callback
        assert gc.callbacks.count(gc_tuning._time_pause) == 1
        assert gc.get_threshold()[1:] == (gc_tuning.MIDDLE_EVERY, gc_tuning.FULL_EVERY)
        before = _count("1")
        gc.collect(1)
        assert _count("1") == before + 1
    finally:
        gc.callbacks.remove(gc_tuning._time_pause)
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def _collections() -> int:
    return sum(generation["collections"] for generation in gc.get_stats())


def test_an_object_alive_through_two_young_collections_is_in_the_oldest_generation():
    """A batch's objects are walked by at most two collections before they reach the oldest
    generation (with CPython's default thresholds: eleven)."""
    thresholds = gc.get_threshold()
    try:
        gc_tuning.tune()
        gc.collect()
        survivor = [object()]  # a list: tracked
        start, seen, keep = _collections(), _collections(), []
        while _collections() - start <= 2:
            keep.append([])  # tracked allocations that stay alive: they trigger collections
            if _collections() != seen:
                seen = _collections()
                if any(o is survivor for o in gc.get_objects(2)):
                    break
        assert any(o is survivor for o in gc.get_objects(2)), _collections() - start
        assert 1 <= _collections() - start <= 2
    finally:
        gc.callbacks.remove(gc_tuning._time_pause)
        gc.unfreeze()
        gc.set_threshold(*thresholds)


async def test_the_collector_is_off_during_a_round_and_on_after_it():
    assert gc.isenabled()
    async with gc_tuning.off_during():
        assert not gc.isenabled()
    assert gc.isenabled()


async def test_a_round_that_lasts_too_long_gets_the_collector_back_meanwhile():
    async with gc_tuning.off_during(max_s=0.01):
        assert not gc.isenabled()
        await asyncio.sleep(0.05)
        assert gc.isenabled()
    assert gc.isenabled()


async def test_a_collector_switched_off_elsewhere_stays_off():
    gc.disable()
    try:
        async with gc_tuning.off_during():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


async def test_a_failing_round_switches_the_collector_back_on():
    try:
        async with gc_tuning.off_during():
            raise ValueError("bad batch")
    except ValueError:
        pass
    assert gc.isenabled()
