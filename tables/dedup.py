"""Ids already delivered, per source partition: upstream duplicates count once.

An upstream that re-sends an event (a retry after a timeout, a replayed
batch) sends it with the same id and the same key, so it lands on the same
partition. The first delivery of an id is remembered; a second delivery while
it is remembered is a duplicate. Ids are kept in buckets of ``bucket_ms`` of
event time, and a bucket is forgotten once the partition's watermark passes its
end plus ``ttl_ms``, so an id is remembered for at least ``ttl_ms`` (at most
``ttl_ms + bucket_ms``) of event time after its own::

    ttl 300 s, buckets of 1 s:  "o-1" at ts=10.2 s -> bucket [10 s, 11 s)
    ... again at watermark 200 s: duplicate ... watermark >= 311 s: forgotten

State is written once per batch and touched bucket (one entry holding the ids
first seen in that batch), not once per event, and forgetting a bucket deletes
its entries (changelog tombstones). A ``ttl_ms`` of 0 turns deduplication off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set

from tables.errors import ConfigError
from tables.state import Entries, Meta, PartitionCache, PartitionStore


@dataclass
class _PartitionIds:
    bucket_of: Dict[str, int] = field(default_factory=dict)  # id -> its bucket start
    ids: Dict[int, List[str]] = field(default_factory=dict)  # bucket start -> ids
    keys: Dict[int, List[str]] = field(default_factory=dict)  # bucket start -> entry keys
    new: Dict[int, List[str]] = field(default_factory=dict)  # bucket -> ids since the flush
    deleted: Set[str] = field(default_factory=set)  # entry keys to delete


class SeenIds(PartitionCache[_PartitionIds]):
    """First deliveries of event ids per source partition, forgotten after ``ttl_ms``."""

    def __init__(self, ttl_ms: int, store: PartitionStore, setting: str = "ttl_ms",
                 bucket_ms: int = 1000) -> None:
        if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms < 0:
            raise ConfigError(f"{setting} must be an integer >= 0 milliseconds, got {ttl_ms!r}")
        super().__init__(store)
        self.ttl_ms = ttl_ms
        self.bucket_ms = bucket_ms

    @property
    def enabled(self) -> bool:
        return self.ttl_ms > 0

    def _load(self, partition: int, meta: Meta, entries: Entries) -> _PartitionIds:
        state = _PartitionIds()
        for key, ids in entries.items():
            bucket = int(key.split("|", 1)[0])
            state.keys.setdefault(bucket, []).append(key)
            state.ids.setdefault(bucket, []).extend(ids)
            for event_id in ids:
                state.bucket_of[event_id] = bucket
        return state

    def first_delivery(self, partition: int, event_id: str, ts_ms: int) -> bool:
        """True the first time ``event_id`` is seen on ``partition`` (it is remembered)."""
        if not self.ttl_ms:
            return True
        state = self._state(partition)
        if event_id in state.bucket_of:
            return False
        bucket = ts_ms - ts_ms % self.bucket_ms
        state.bucket_of[event_id] = bucket
        state.ids.setdefault(bucket, []).append(event_id)
        state.new.setdefault(bucket, []).append(event_id)
        return True

    def expire(self, partition: int, watermark_ms: Optional[int]) -> None:
        """Forget the buckets whose end plus ``ttl_ms`` the watermark has reached."""
        if not self.ttl_ms or watermark_ms is None:
            return
        state = self._state(partition)
        due = [b for b in state.ids if b + self.bucket_ms + self.ttl_ms <= watermark_ms]
        for bucket in due:
            for event_id in state.ids.pop(bucket):
                del state.bucket_of[event_id]
            state.deleted.update(state.keys.pop(bucket, ()))
            state.new.pop(bucket, None)

    def flush(self, partition: int, tag: int) -> None:
        """Queue the batch's changes with the store; ``tag`` (e.g. the batch's next offset)
        makes its entry keys unique."""
        if not self.ttl_ms:
            return
        state = self._state(partition)
        if not state.new and not state.deleted:
            return
        updated = {}
        for bucket, ids in state.new.items():
            key = f"{bucket}|{tag}"
            updated[key] = ids
            state.keys.setdefault(bucket, []).append(key)
        self.store.save(partition, {}, updated, sorted(state.deleted))
        state.new.clear()
        state.deleted.clear()

    def __len__(self) -> int:
        return sum(len(s.bucket_of) for s in self._partitions.values())
