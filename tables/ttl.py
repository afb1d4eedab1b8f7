"""Per-key state that is not windowed, expiring in event time (a TTL).

Each key's value carries the highest event time that touched it. Once a
partition's watermark passes ``touched + ttl_ms`` the key is dropped, and the
store deletes it (a changelog tombstone), so state such as a user's last
location or a set of seen ids stays bounded::

    ttl 60 s:  put(k, ts=10s) ... watermark 69.999s: kept ... watermark 70s: expired

Writes are buffered per partition and persisted by `flush`, once per batch.
In memory a key's entry is a plain tuple ``(value, touched)``, stored as it is
(JSON ``[value, touched]``; entries written as ``{"v": value, "t": touched}``
by earlier versions load too): with a value of plain tuples and scalars the
garbage collector soon stops tracking it, so large state costs full collections
little, and a flush writes the entries without building anything per key.
``load_value`` turns a stored (JSON) value back into that form.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from tables.errors import ConfigError
from tables.state import Entries, Meta, PartitionCache, PartitionStore


@dataclass
class TtlPartition:
    """One source partition's keys of a `TtlState` (`TtlState.view`): get and put without
    looking the partition up each time."""

    ttl_ms: int
    values: Dict[str, Tuple[Any, int]]  # key -> (value, touched event time)
    # heap of (due, key): one entry per key, whatever its writes (one per write held every
    # update of a day's TTL: at 5,000 a second, 432 million entries); due <= touched + ttl.
    # A key deleted and written again holds two until the older one comes due.
    expiry: List[Tuple[int, str]] = field(default_factory=list)
    updated: Set[str] = field(default_factory=set)
    deleted: Set[str] = field(default_factory=set)

    def get(self, key: str) -> Optional[Any]:
        entry = self.values.get(key)
        return None if entry is None else entry[0]

    def put(self, key: str, value: Any, ts_ms: int) -> None:
        """Set ``key``; its time-to-live counts from the highest event time that set it."""
        old = self.values.get(key)
        if old is None:  # a key touched again keeps its heap entry: `expire` moves it on
            self.values[key] = (value, ts_ms)
            heapq.heappush(self.expiry, (ts_ms + self.ttl_ms, key))
        else:
            self.values[key] = (value, ts_ms if ts_ms > old[1] else old[1])
        self.updated.add(key)
        self.deleted.discard(key)


class TtlState(PartitionCache[TtlPartition]):
    """Keyed values per source partition with an event-time time-to-live."""

    def __init__(self, ttl_ms: int, store: PartitionStore, setting: str = "ttl_ms",
                 load_value: Callable[[Any], Any] = lambda value: value) -> None:
        if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms <= 0:
            raise ConfigError(f"{setting} must be larger than zero milliseconds, got {ttl_ms!r}")
        super().__init__(store)
        self.ttl_ms = ttl_ms
        self.load_value = load_value

    def _load(self, partition: int, meta: Meta, entries: Entries) -> TtlPartition:
        load_value = self.load_value
        values = {}
        for k, e in entries.items():
            value, touched = (e["v"], e["t"]) if isinstance(e, dict) else e
            values[k] = (load_value(value), touched)
        keys = TtlPartition(self.ttl_ms, values)
        keys.expiry = [(touched + self.ttl_ms, k) for k, (_, touched) in values.items()]
        heapq.heapify(keys.expiry)
        return keys

    def view(self, partition: int) -> TtlPartition:
        """The partition's keys, for many gets and puts in a row."""
        return self._state(partition)

    def get(self, partition: int, key: str) -> Optional[Any]:
        return self._state(partition).get(key)

    def put(self, partition: int, key: str, value: Any, ts_ms: int) -> None:
        """Set ``key``; its time-to-live counts from the highest event time that set it."""
        self._state(partition).put(key, value, ts_ms)

    def delete(self, partition: int, key: str) -> None:
        keys = self.view(partition)
        if keys.values.pop(key, None) is not None:
            keys.deleted.add(key)
            keys.updated.discard(key)

    def expire(self, partition: int, watermark_ms: Optional[int]) -> List[str]:
        """Drop every key whose time-to-live the watermark has passed; return them."""
        keys = self.view(partition)
        expired = []
        while watermark_ms is not None and keys.expiry and keys.expiry[0][0] <= watermark_ms:
            due, key = heapq.heappop(keys.expiry)
            entry = keys.values.get(key)
            if entry is None:
                continue  # deleted meanwhile
            if entry[1] + self.ttl_ms > due:  # touched since: due later
                heapq.heappush(keys.expiry, (entry[1] + self.ttl_ms, key))
                continue
            self.delete(partition, key)
            expired.append(key)
        return expired

    def flush(self, partition: int, meta: Optional[Dict[str, Any]] = None) -> None:
        """Persist the keys this partition changed since the last flush."""
        keys = self.view(partition)
        if not keys.updated and not keys.deleted:
            return
        values = keys.values
        updated = {k: values[k] for k in keys.updated}  # (value, touched): JSON [value, touched]
        self.store.save(partition, meta or {}, updated, sorted(keys.deleted))
        keys.updated.clear()
        keys.deleted.clear()

    def __len__(self) -> int:
        return sum(len(k.values) for k in self._partitions.values())
