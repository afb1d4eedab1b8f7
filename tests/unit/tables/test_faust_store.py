"""FaustTableStore: each partition's writes leave with that partition's batch only."""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass

import orjson
import rocksdict

from tables import faust_store
from tables.faust_store import FaustTableStore


class Topic:
    def get_topic_name(self) -> str:
        return "app-view-changelog"


class Table:
    def __init__(self) -> None:
        self.changelog_topic = Topic()
        self.data = {}


@dataclass
class Msg:
    partition: int


@dataclass
class Event:
    message: Msg


class Sender:
    def __init__(self) -> None:
        self.sent = []
        self.committed = []

    async def send_many(self, topic, partition, records):
        self.sent.append((topic, partition, list(records)))

    def after_commit(self, apply):
        self.committed.append(apply)

    def commit(self):
        for apply in self.committed:
            apply()


async def test_a_partition_flush_sends_only_its_own_writes_even_when_others_are_queued():
    store = FaustTableStore(Table())
    store.bind(Event(Msg(0))).bind(Event(Msg(1)))
    store.save(0, {"next": 5}, {"w1": [1, 2.0]}, [])
    store.save(1, {"next": 9}, {"w1": [3, 4.0]}, ["w0"])  # another batch, in progress too
    first, second = Sender(), Sender()
    await store.flush_changelog(first, 0)
    assert [(t, p, [k for k, _ in recs]) for t, p, recs in first.sent] == [
        ("app-view-changelog", 0, [b'"0|e|w1"', b'"0|m"'])]
    await store.flush_changelog(second, 1)
    assert [(p, recs) for _, p, recs in second.sent] == [
        (1, [(b'"1|e|w0"', None), (b'"1|e|w1"', b"[3,4.0]"), (b'"1|m"', b'{"next":9}')])]
    await store.flush_changelog(Sender(), 0)  # nothing queued any more: nothing sent


async def test_local_state_moves_only_after_the_commit_and_not_for_a_partition_given_up():
    table = Table()
    store = FaustTableStore(table)
    store.bind(Event(Msg(0))).bind(Event(Msg(1)))
    store.save(0, {"next": 5}, {"w1": 1}, [])
    store.save(1, {"next": 7}, {"w1": 2}, [])
    out0, out1 = Sender(), Sender()
    await store.flush_changelog(out0, 0)
    await store.flush_changelog(out1, 1)
    assert table.data == {}
    out0.commit()
    assert table.data == {"0|e|w1": 1, "0|m": {"next": 5}}
    store.forget(1)  # revoked before its batch committed
    out1.commit()
    assert "1|m" not in table.data


async def test_queued_records_hold_about_their_own_size_until_the_commit():
    """A batch keeps its encoded records until it commits; short ones must not each keep an
    encoder's buffer (orjson's bytes hold at least 4 KB each)."""
    store = FaustTableStore(Table())
    store.bind(Event(Msg(0)))
    store.save(0, {"next": 1}, {f"user-{i}": [[i], i] for i in range(1000)}, [])
    out = Sender()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await store.flush_changelog(out, 0)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    (_, _, records), = out.sent
    assert records[0] == (b'"0|e|user-0"', b'[[0],0]')
    assert held < 1001 * 400  # about 250 bytes a record (two bytes, a tuple, list slots)


class RocksTable(Table):
    """A table on one real rocksdict database per partition, as Faust's RocksDB store."""

    def __init__(self, folder) -> None:
        super().__init__()
        self.data = RocksData(folder)

    def get(self, key):
        db = self.data._dbs.get(int(key.split("|", 1)[0]))
        raw = None if db is None else db.get(orjson.dumps(key))
        return None if raw is None else orjson.loads(raw)


class RocksData:
    use_rocksdict = True

    def __init__(self, folder) -> None:
        self.folder = folder
        self._dbs = {}

    def _db_for_partition(self, partition):
        if partition not in self._dbs:
            self._dbs[partition] = rocksdict.Rdict(str(self.folder / str(partition)),
                                                   options=rocksdict.Options(raw_mode=True))
        return self._dbs[partition]


async def commit(store, partition, updated, deleted=()):
    store.save(partition, {"next": len(updated)}, updated, list(deleted))
    out = Sender()
    await store.flush_changelog(out, partition)
    out.commit()


def stored(table, partition):
    return {orjson.loads(k): orjson.loads(v) for k, v in table.data._db_for_partition(partition).items()}


async def test_committed_records_reach_rocksdb_coalesced_when_the_partition_loads_again(tmp_path):
    table = RocksTable(tmp_path)
    store = FaustTableStore(table)
    store.bind(Event(Msg(0)))
    table.data._db_for_partition(0)
    await commit(store, 0, {"u1": 1, "u2": 2})
    await commit(store, 0, {"u1": 10}, deleted=["u2"])
    assert stored(table, 0) == {} and store.unapplied(0) == 3  # u1, u2 and the meta, newest
    assert store.load(0) == ({"next": 1}, {"u1": 10})  # after an abort: what committed
    assert stored(table, 0) == {"0|e|u1": 10, "0|m": {"next": 1}} and store.unapplied(0) == 0


async def test_committed_records_reach_rocksdb_when_the_partition_leaves_memory(tmp_path):
    table = RocksTable(tmp_path)
    store = FaustTableStore(table)
    store.bind(Event(Msg(0))).bind(Event(Msg(1)))
    table.data._db_for_partition(0)
    await commit(store, 0, {"u1": 1})
    await commit(store, 1, {"u9": 9})  # partition 1's database is closed (given up)
    store.forget(0)
    store.forget(1)
    assert stored(table, 0) == {"0|e|u1": 1, "0|m": {"next": 1}}
    assert 1 not in table.data._dbs and store.unapplied(1) == 0  # its recovery replays it


async def test_committed_records_reach_rocksdb_once_enough_distinct_keys_wait(tmp_path, monkeypatch):
    monkeypatch.setattr(faust_store, "LOCAL_APPLY_RECORDS", 4)
    table = RocksTable(tmp_path)
    store = FaustTableStore(table)
    store.bind(Event(Msg(0)))
    table.data._db_for_partition(0)
    for _ in range(5):  # the same keys again and again: 3 distinct records wait
        await commit(store, 0, {"a": 1, "b": 2})
    assert stored(table, 0) == {} and store.unapplied(0) == 3
    await commit(store, 0, {"c": 3, "d": 4})
    assert stored(table, 0) == {"0|e|a": 1, "0|e|b": 2, "0|e|c": 3, "0|e|d": 4, "0|m": {"next": 2}}
    assert store.unapplied(0) == 0


async def test_a_commit_after_the_partition_was_forgotten_still_reaches_its_open_database(
        tmp_path):
    """Revoked and kept through a rebalance: the pipeline forgot the partition, but its
    transaction committed, so the changelog has the records and RocksDB must have them too
    (Faust's recovery may count them as read)."""
    table = RocksTable(tmp_path)
    store = FaustTableStore(table)
    store.bind(Event(Msg(0))).bind(Event(Msg(1)))
    table.data._db_for_partition(0)
    table.data._db_for_partition(1)
    for partition in (0, 1):
        store.save(partition, {"next": 3}, {"u1": partition}, [])
    out0, out1 = Sender(), Sender()
    await store.flush_changelog(out0, 0)
    await store.flush_changelog(out1, 1)
    store.forget(0)
    store.forget(1)
    table.data._dbs.pop(1).close()  # partition 1 left this worker: its database closed
    out0.commit()
    out1.commit()
    assert stored(table, 0) == {"0|e|u1": 0, "0|m": {"next": 3}}
    assert 1 not in table.data._dbs  # not opened again for writes of a partition gone
    assert store.load(0) == ({"next": 3}, {"u1": 0})


async def test_every_store_writes_what_it_holds_at_a_revocation(tmp_path):
    """A store no pipeline forgets (a merge stage's) holds nothing through a rebalance."""
    table = RocksTable(tmp_path)
    store = FaustTableStore(table)
    store.bind(Event(Msg(0)))
    table.data._db_for_partition(0)
    await commit(store, 0, {"w1": "emitted"})
    assert store.unapplied(0) == 2
    faust_store.write_all_unapplied()
    assert stored(table, 0) == {"0|e|w1": "emitted", "0|m": {"next": 1}}
    assert store.unapplied(0) == 0
