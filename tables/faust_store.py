"""`WindowStore` on a Faust table: RocksDB on disk, a compacted changelog in Kafka.

Faust routes a table write to the RocksDB database and changelog partition of
the *current event*. A batch holds events of one source partition, so the
store makes one of them current while it writes: the state of source
partition P lives in changelog partition P, and Faust's recovery restores it
to whichever worker is assigned P. Keys (strings, JSON values)::

    "<P>|meta"          -> [max_event_ms or null, next_offset]
    "<P>|w|<start_ms>"  -> accumulator of the open window starting at start_ms

Closing a window deletes its key, which writes a tombstone to the changelog.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Any, Dict, Iterable, Iterator, List, Optional

from faust.streams import _current_event
from faust.types import EventT, TableT

from tables.state import StoredState


@contextmanager
def current_event(event: EventT) -> Iterator[None]:
    """Make ``event`` Faust's current event, so table writes go to its partition."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class FaustTableStore:
    """Window state of many source partitions in one Faust table."""

    def __init__(self, table: TableT) -> None:
        self.table = table
        self._event: Optional[EventT] = None

    def bind(self, event: EventT) -> "FaustTableStore":
        """Use ``event`` (of the partition being processed) as the write context."""
        self._event = event
        return self

    def load(self, partition: int) -> StoredState:
        prefix = f"{partition}|"
        meta = self.table.get(f"{partition}|meta")
        max_event_ms, next_offset = (meta[0], meta[1]) if meta else (None, 0)
        windows: Dict[int, List[Any]] = {}
        for key, value in self.table.items():
            if key.startswith(prefix + "w|") and value is not None:
                windows[int(key.rsplit("|", 1)[1])] = list(value)
        return max_event_ms, next_offset, windows

    def save(
        self,
        partition: int,
        max_event_ms: Optional[int],
        next_offset: int,
        updated: Dict[int, List[Any]],
        deleted: Iterable[int],
    ) -> None:
        if self._event is None or self._event.message.partition != partition:
            raise RuntimeError(
                f"FaustTableStore.save for partition {partition} needs bind(event) "
                "with an event of that partition"
            )
        table = self.table
        with current_event(self._event):
            for start in deleted:
                key = f"{partition}|w|{start}"
                if key in table:
                    del table[key]
            for start, acc in updated.items():
                table[f"{partition}|w|{start}"] = acc
            table[f"{partition}|meta"] = [max_event_ms, next_offset]
