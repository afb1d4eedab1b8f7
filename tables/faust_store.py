"""`PartitionStore` on a Faust table: RocksDB on disk, a compacted changelog in Kafka.

Faust routes a table write to the RocksDB database and changelog partition of
the *current event*. A batch holds events of one source partition, so the
store makes one of them current while it writes: the state of source
partition P lives in changelog partition P, and Faust's recovery restores it
to whichever worker is assigned P. Table keys (JSON values)::

    "<P>|m"          -> the partition's meta (event clock, next offset)
    "<P>|e|<key>"    -> one entry (a window's accumulator, a key's sessions)

Deleting an entry writes a tombstone to the changelog.

`save` only queues the writes; `flush_changelog` sends them with the batch's
sender, in the same Kafka transaction as the batch's outputs (Faust's own
changelog sends would leave on a producer and at a moment of Faust's
choosing), and writes RocksDB once that transaction has committed, so the
local state never holds what an aborted transaction wrote.

RocksDB gets the committed records of a live partition late and coalesced: they wait
in a dict per partition (the newest value of each key) until ``LOCAL_APPLY_RECORDS``
keys wait, the partition's state is loaded again (after an abort), or it leaves
memory (`forget`), and at every revocation, after its commit and before the next
generation's recovery (`write_all_unapplied`): nothing waits through a rebalance.
The local database is read only when a state is loaded, and a recovery reads each
changelog partition from the store's persisted offset (`app.bulk_restore`), which
these writes never move, so what did not reach RocksDB before a crash is restored
from the changelog. Writing each batch's records at its commit took 7% of the fraud
worker's CPU at 1,000,000 transactions (a user's state is written once per batch, and
its key many times a minute).
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

import orjson
from faust.streams import _current_event
from faust.types import EventT, TableT

try:
    import rocksdict
except ImportError:  # Faust's other RocksDB binding: `_apply_store`
    rocksdict = None

from tables.state import Entries, Meta

#: committed records (distinct keys) a partition holds back before writing them to RocksDB
LOCAL_APPLY_RECORDS = 20_000

#: every store of the process, for `write_all_unapplied`
_STORES: "weakref.WeakSet[FaustTableStore]" = weakref.WeakSet()


def write_all_unapplied() -> None:
    """Write every store's held records to RocksDB: at each revocation, after its commit and
    before the next generation's recovery. Records held through a rebalance would be written
    later over the state that recovery restored (maybe another worker's newer records of the
    same keys), as a partition's next `load` writes what it holds first."""
    for store in list(_STORES):
        store.write_unapplied()


class _Writes(NamedTuple):
    """Queued writes as two lists, not a tuple per write: at full speed the fraud pipeline
    queues one per transaction, each kept alive (and walked by the garbage collector) until
    its batch is flushed."""

    table_keys: List[bytes]
    values: List[Any]


def _encode(value: Any) -> bytes:
    """``value`` as JSON bytes that own no more memory than their length.

    orjson returns its bytes in an over-allocated buffer that it does not shrink
    (orjson 3.13: at least 4 KB each, however short). A batch keeps its
    changelog records until its transaction commits, one key and one value per
    written entry, so the fraud pipeline's batches of 5,000 transactions held
    about 40 MB each, for each batch in flight (``WEIR_BATCH_CONCURRENCY``).
    Joining copies the bytes into an object of their own size (cheaper than
    ``bytes(memoryview(...))``)."""
    return b"".join((orjson.dumps(value), b""))


@contextmanager
def current_event(event: EventT) -> Iterator[None]:
    """Make ``event`` Faust's current event, so table writes go to its partition."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class FaustTableStore:
    """One engine's state, for many source partitions, in one Faust table."""

    def __init__(self, table: TableT) -> None:
        self.table = table
        self._events: dict = {}
        #: writes queued per source partition, encoded keys and values (None: delete): each
        #: partition's batch flushes its own, so batches of several partitions may be in
        #: progress at once
        self._changelog: Dict[int, _Writes] = {}
        #: per partition, each live entry's table key, encoded (a key is written many times:
        #: a user's state once per batch of that user)
        self._keys: Dict[int, Dict[str, bytes]] = {}
        #: per partition, its meta's table key, encoded (written once per batch)
        self._meta_keys: Dict[int, bytes] = {}
        #: committed records of live partitions not yet in RocksDB: encoded key -> value or None
        self._unapplied: Dict[int, Dict[bytes, Optional[bytes]]] = {}
        _STORES.add(self)

    def bind(self, event: EventT) -> "FaustTableStore":
        """Use ``event`` as the write context of its partition (kept for timers)."""
        self._events[event.message.partition] = event
        return self

    def forget(self, partition: int) -> None:
        """The partition leaves memory (revoked, or its batch failed): what it committed
        goes to RocksDB now, while its database is still open."""
        self._write_unapplied(partition)
        self._events.pop(partition, None)
        self._keys.pop(partition, None)

    def is_bound(self, partition: int) -> bool:
        """True once an event of ``partition`` gave the store its write context."""
        return partition in self._events

    def load(self, partition: int) -> Tuple[Meta, Entries]:
        prefix = f"{partition}|e|"
        self._write_unapplied(partition)
        meta = self.table.get(f"{partition}|m") or {}
        if self._rocksdict():  # only the partition's own database, from the prefix on
            return dict(meta), self._load_rocksdb(partition, prefix)
        entries = {
            key[len(prefix):]: value
            for key, value in self.table.items()
            if key.startswith(prefix) and value is not None
        }
        return dict(meta), entries

    def _rocksdict(self) -> bool:
        """True when the table is in RocksDB through rocksdict (read and written raw here)."""
        return rocksdict is not None and getattr(self.table.data, "use_rocksdict", False)

    def _load_rocksdb(self, partition: int, prefix: str) -> Entries:
        start = orjson.dumps(prefix)[:-1]  # the encoded keys of the prefix begin so
        entries = {}
        for raw_key, raw_value in self.table.data._db_for_partition(partition).items(
                from_key=start):
            if not raw_key.startswith(start):
                break
            if raw_value is not None:
                entries[orjson.loads(raw_key)[len(prefix):]] = orjson.loads(raw_value)
        return entries

    def save(self, partition: int, meta: Meta, updated: Entries, deleted: Iterable[str]) -> None:
        event: Optional[EventT] = self._events.get(partition)
        if event is None:
            raise RuntimeError(f"FaustTableStore.save for partition {partition} needs bind(event) first")
        queued = self._changelog.get(partition)
        if queued is None:
            queued = self._changelog[partition] = _Writes([], [])
        table_keys, values = queued
        keys = self._keys.get(partition)
        if keys is None:
            keys = self._keys[partition] = {}
        for key in deleted:
            if key not in updated:
                table_keys.append(keys.pop(key, None) or _encode(f"{partition}|e|{key}"))
                values.append(None)
        for key, value in updated.items():
            table_key = keys.get(key)
            if table_key is None:
                table_key = keys[key] = _encode(f"{partition}|e|{key}")
            table_keys.append(table_key)
            values.append(value)
        meta_key = self._meta_keys.get(partition)
        if meta_key is None:
            meta_key = self._meta_keys[partition] = _encode(f"{partition}|m")
        table_keys.append(meta_key)
        values.append(meta)

    async def flush_changelog(self, out: Any, partition: int) -> None:
        """Send the writes queued for ``partition`` to its changelog partition with ``out`` (an
        `app.sinks.Sender`), and apply them to RocksDB once ``out`` has committed them. Keys
        and values are encoded once (orjson, the bytes Faust's JSON serializer gives), for both."""
        queued = self._changelog.pop(partition, None)
        if queued is None:
            return
        table_keys, values = queued
        encoded = [None if value is None else _encode(value) for value in values]
        await out.send_many(self.table.changelog_topic.get_topic_name(), partition,
                            zip(table_keys, encoded))
        out.after_commit(lambda: self._apply_local(partition, table_keys, values, encoded))

    def _apply_local(self, partition: int, table_keys: List[bytes], values: List[Any],
                     encoded: List[Optional[bytes]]) -> None:
        if not self._rocksdict():
            if partition in self._events:  # not given up meanwhile (the store needs its event)
                self._apply_store(partition, table_keys, values)
            return
        if partition in self._events:  # live: coalesced, written later
            unapplied = self._unapplied.get(partition)
            if unapplied is None:
                unapplied = self._unapplied[partition] = {}
            unapplied.update(zip(table_keys, encoded))  # in order: a key's newest value wins
            if len(unapplied) >= LOCAL_APPLY_RECORDS:
                self._write_unapplied(partition)
            return
        # forgotten meanwhile (revoked, and maybe kept): written now, the changelog has them
        self._write(partition, zip(table_keys, encoded))

    def unapplied(self, partition: int) -> int:
        """How many committed records of the partition wait to be written to RocksDB."""
        return len(self._unapplied.get(partition, ()))

    def write_unapplied(self) -> None:
        """Write every partition's held records to RocksDB now."""
        for partition in list(self._unapplied):
            self._write_unapplied(partition)

    def _write_unapplied(self, partition: int) -> None:
        records = self._unapplied.pop(partition, None)
        if records:
            self._write(partition, records.items())

    def _write(self, partition: int, records: Iterable[Tuple[bytes, Optional[bytes]]]) -> None:
        db = self.table.data._dbs.get(partition)
        if db is None:
            return  # its database closed: the partition left, its changelog has the records
        batch = rocksdict.WriteBatch(raw_mode=True)  # the changelog's bytes, as recovery
        for key, value in records:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        db.write(batch)

    def _apply_store(self, partition: int, table_keys: List[bytes], values: List[Any]) -> None:
        """Any other Faust store: key by key, through the table's serializers."""
        data = self.table.data  # the store itself: no changelog send of Faust's
        with current_event(self._events[partition]):
            for table_key, value in zip(table_keys, values):
                key = orjson.loads(table_key)
                if value is None:
                    if key in data:
                        del data[key]
                else:
                    data[key] = value
