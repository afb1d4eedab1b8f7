"""Where the bulk restore of a rebalance starts reading each active changelog partition."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from faust.types import TP

from app.bulk_restore import BulkRestoringRecovery


class Table:
    def __init__(self, persisted):
        self.persisted = persisted

    def persisted_offset(self, tp):
        return self.persisted.get(tp)


class Restorer:
    def __init__(self):
        self.asked = None

    async def restore(self, tables, first, last, limit_s):
        self.asked = (dict(first), dict(last))
        return dict(last)  # read through the highwaters


class Consumer:
    async def earliest_offsets(self, *tps):
        return {tp: 0 for tp in tps}


def recovery(table, highwaters):
    """Just what `_build_offsets` reads of Faust's recovery service."""
    rec = object.__new__(BulkRestoringRecovery)
    rec.tp_to_table = {tp: table for tp in highwaters}
    rec.active_highwaters = dict(highwaters)
    rec.restorer = Restorer()
    rec.app = SimpleNamespace(conf=SimpleNamespace(broker_request_timeout=90.0))
    rec.log = SimpleNamespace(info=lambda *args, **kwargs: None)
    return rec


async def test_a_kept_partition_is_read_from_what_its_store_holds_not_from_a_jumped_offset():
    kept, arrived = TP("app-view-changelog", 2), TP("app-view-changelog", 0)
    rec = recovery(Table({kept: 79}), {kept: 166, arrived: 80})
    # Faust's changelog reader moved the kept partition's offset to its new highwater
    # ("Aborted tx until highwater") before this rebalance read anything
    offsets = Counter({kept: 166})
    await rec._build_offsets(Consumer(), {kept, arrived}, offsets, "active")
    first, last = rec.restorer.asked
    assert first == {kept: 80, arrived: 0}  # after what the store holds; all of a new one
    assert last == {kept: 166, arrived: 80}
    assert offsets == {kept: 166, arrived: 80}  # read through: Faust reads nothing more


async def test_standby_offsets_are_left_to_faust():
    standby = TP("app-view-changelog", 1)
    rec = recovery(Table({standby: 10}), {})
    offsets = Counter({standby: 40})
    await rec._build_offsets(Consumer(), {standby}, offsets, "standby")
    assert offsets == {standby: 40} and rec.restorer.asked is None


async def test_without_the_bulk_step_faust_reads_a_kept_partition_from_what_its_store_holds():
    kept = TP("app-view-changelog", 2)
    rec = recovery(Table({kept: 79}), {kept: 166})
    rec.restorer = None  # WEIR_BULK_RESTORE=false
    offsets = Counter({kept: 166})
    await rec._build_offsets(Consumer(), {kept}, offsets, "active")
    assert offsets == {kept: 79}  # Faust reads 80..166 itself


class SeekingConsumer:
    def __init__(self):
        self.sought = []

    async def seek_wait(self, partitions):
        self.sought.append(dict(partitions))


def seeking_recovery(rebalanced: bool):
    """Just what `_seek_offsets` reads: the signal a rebalance sets (Faust's own event)."""
    rec = object.__new__(BulkRestoringRecovery)
    if rebalanced:
        rec.signal_recovery_start.set()
    return rec


async def test_a_pass_that_a_rebalance_overtook_starts_over_instead_of_seeking_its_offsets():
    from faust.tables.recovery import RebalanceAgain

    arrived = TP("app-view-changelog", 3)
    # the rebalance gave the newly assigned standby partition None (nothing persisted yet)
    offsets = Counter({arrived: None})
    consumer = SeekingConsumer()
    try:
        await seeking_recovery(rebalanced=True)._seek_offsets(consumer, {arrived}, offsets,
                                                              "standby")
    except RebalanceAgain:
        pass
    else:
        raise AssertionError("the pass went on to seek after a rebalance")
    assert consumer.sought == []


async def test_a_pass_no_rebalance_overtook_seeks_as_faust_does():
    kept, empty = TP("app-view-changelog", 1), TP("app-view-changelog", 2)
    consumer = SeekingConsumer()
    await seeking_recovery(rebalanced=False)._seek_offsets(
        consumer, {kept, empty}, Counter({kept: 41, empty: -1}), "standby")
    assert consumer.sought == [{kept: 41, empty: 0}]  # -1 (nothing applied): from the start
