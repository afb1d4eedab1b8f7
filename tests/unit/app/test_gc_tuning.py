"""The worker's GC settings: rarer full collections, every pause timed for /metrics."""

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
        assert gc.get_threshold()[2] == gc_tuning.FULL_EVERY
        before = _count("1")
        gc.collect(1)
        assert _count("1") == before + 1
    finally:
        gc.callbacks.remove(gc_tuning._time_pause)
        gc.unfreeze()
        gc.set_threshold(*thresholds)
