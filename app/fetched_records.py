"""Fetched records as one small object each, which is also the direct path's event.

aiokafka turns every fetched record into a `ConsumerRecord` (a dataclass: about
400 ns to build, on the consumer's thread), and the direct batch path then built
a `LogEvent` of each (the event shape its pipelines read) on the main thread. Both
lived until their batch was done, so each was walked by the garbage collector
about twice: on the fraud pipeline at full speed the collector took a fifth of
the worker's CPU, and these two were a fifth of what it walked.

`FetchedRecord` has every field of `ConsumerRecord` (Faust and aiokafka read
them by name) and the event shape of `LogEvent` (``.value``, ``.message.offset``
and so on), as a named tuple built in one call. `install` makes aiokafka's
fetcher build it instead; the direct path hands the fetched lists on as they are.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence, Tuple

from aiokafka.consumer.fetcher import PartitionRecords
from faust.types import TP


class FetchedRecord(NamedTuple):
    """A fetched record: `aiokafka.structs.ConsumerRecord`'s fields, and a Faust event's
    ``message`` (itself) and ``tp``."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int
    key: Optional[bytes]
    value: Any
    checksum: Optional[int]
    serialized_key_size: int
    serialized_value_size: int
    headers: Sequence[Tuple[str, bytes]]

    @property
    def message(self) -> "FetchedRecord":
        return self

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


_new = tuple.__new__


def _fetched_record(self: PartitionRecords, tp: Any, record: Any) -> FetchedRecord:
    """`PartitionRecords._consumer_record`, building a `FetchedRecord`."""
    key, value = record.key, record.value
    key_size = -1 if key is None else len(key)
    value_size = -1 if value is None else len(value)
    if self._key_deserializer:
        key = self._key_deserializer(key)
    if self._value_deserializer:
        value = self._value_deserializer(value)
    headers = record.headers
    return _new(FetchedRecord, (tp.topic, tp.partition, record.offset, record.timestamp,
                                record.timestamp_type, key, value, record.checksum, key_size,
                                value_size, tuple(headers) if headers else ()))


def install() -> None:
    """Make every aiokafka consumer of this process build `FetchedRecord`s (idempotent)."""
    PartitionRecords._consumer_record = _fetched_record


def installed() -> bool:
    return PartitionRecords._consumer_record is _fetched_record
