"""Ids already delivered, per source partition: upstream duplicates count once.

An upstream that re-sends an event (a retry after a timeout, a replayed
batch) sends it with the same id and the same key, so it lands on the same
partition. The first delivery of an id is remembered from its event time
until the partition's watermark passes that time plus ``ttl_ms``; a second
delivery inside that span is a duplicate::

    ttl 300 s:  id "o-1" first at ts=10 s ... again at watermark 200 s: duplicate
                                          ... watermark >= 310 s: forgotten (tombstone)

A ``ttl_ms`` of 0 turns deduplication off: every delivery is a first one.
State is a `tables.ttl.TtlState`, so it is persisted (and restored) like the
other engines' state, in the batch's transaction.
"""

from __future__ import annotations

from typing import Optional

from tables.errors import ConfigError
from tables.state import PartitionStore
from tables.ttl import TtlState


class SeenIds:
    """First deliveries of event ids per source partition, forgotten after ``ttl_ms``."""

    def __init__(self, ttl_ms: int, store: PartitionStore, setting: str = "ttl_ms") -> None:
        if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms < 0:
            raise ConfigError(f"{setting} must be an integer >= 0 milliseconds, got {ttl_ms!r}")
        self._ids: Optional[TtlState] = TtlState(ttl_ms, store, setting) if ttl_ms else None

    @property
    def enabled(self) -> bool:
        return self._ids is not None

    def first_delivery(self, partition: int, event_id: str, ts_ms: int) -> bool:
        """True the first time ``event_id`` is seen on ``partition`` (it is remembered)."""
        ids = self._ids
        if ids is None:
            return True
        if ids.get(partition, event_id) is not None:
            return False
        ids.put(partition, event_id, 1, ts_ms)
        return True

    def expire(self, partition: int, watermark_ms: Optional[int]) -> None:
        if self._ids is not None:
            self._ids.expire(partition, watermark_ms)

    def flush(self, partition: int) -> None:
        """Queue this partition's changes with the store (sent with the batch)."""
        if self._ids is not None:
            self._ids.flush(partition)

    def forget(self, partition: int) -> None:
        if self._ids is not None:
            self._ids.forget(partition)

    def __len__(self) -> int:
        return 0 if self._ids is None else len(self._ids)
