"""BulkRestorer against the real broker: committed changelog records in, aborted ones and
markers skipped, the range read through its last offset, and a time limit respected."""

from __future__ import annotations

import uuid
from typing import Dict, List, Optional, Tuple

import pytest
from aiokafka import AIOKafkaProducer
from faust.types import TP

from app.bulk_restore import BulkRestorer
from tests.integration.kafka_tools import new_topic

pytestmark = pytest.mark.integration


class FakeTable:
    """Applies changelog batches to a dict, as a RocksDB store does to its database."""

    def __init__(self) -> None:
        self.data: Dict[bytes, bytes] = {}
        self.offsets: List[int] = []
        self.batches = 0

    def apply_changelog_batch(self, batch) -> None:
        self.batches += 1
        for record in batch:
            msg = record.message
            self.offsets.append(msg.offset)
            if msg.value is None:
                self.data.pop(msg.key, None)
            else:
                self.data[msg.key] = msg.value


async def transactional_changelog(servers: str) -> Tuple[str, Dict[bytes, bytes], int]:
    """A 2-partition topic written in transactions (one aborted, tombstones included);
    returns its name, partition 0's committed final state and its log end offset."""
    topic = await new_topic(servers, "changelog", partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=servers,
                                transactional_id=f"bulk-restore-test-{uuid.uuid4().hex[:8]}")
    await producer.start()
    want: Dict[bytes, bytes] = {}
    try:
        for txn in range(30):
            async with producer.transaction():
                for i in range(100):
                    key = f"k{(txn * 100 + i) % 1500}".encode()
                    value: Optional[bytes] = None if i % 17 == 0 else f"v{txn}-{i}".encode()
                    await producer.send(topic, value, key=key, partition=0)
                    if value is None:
                        want.pop(key, None)
                    else:
                        want[key] = value
        await producer.begin_transaction()  # an aborted transaction: none of it may apply
        for i in range(50):
            await producer.send(topic, b"aborted", key=f"k{i}".encode(), partition=0)
        await producer.abort_transaction()
        async with producer.transaction():  # and a last committed one after it
            await producer.send(topic, b"last", key=b"k-last", partition=0)
        want[b"k-last"] = b"last"
    finally:
        await producer.stop()
    consumer_end = await end_offset(servers, topic)
    return topic, want, consumer_end


async def end_offset(servers: str, topic: str) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=servers, isolation_level="read_committed")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        return (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


async def test_committed_records_are_restored_through_the_last_offset(kafka_servers):
    topic, want, end = await transactional_changelog(kafka_servers)
    tp = TP(topic, 0)
    table = FakeTable()
    restorer = BulkRestorer(kafka_servers, "read_committed", chunk_records=700)
    # Faust's highwater: the offset before the last stable offset, here a commit marker
    read_through = await restorer.restore({tp: table}, {tp: 0}, {tp: end - 1})
    assert read_through == {tp: end - 1}, "read through the trailing marker"
    assert table.data == want
    assert b"aborted" not in table.data.values()
    assert table.offsets == sorted(table.offsets) and len(table.offsets) == 3001
    assert table.batches >= 5  # fetched in chunks, each applied as one batch


async def test_a_restore_resumes_from_where_the_store_stands(kafka_servers):
    topic, want, end = await transactional_changelog(kafka_servers)
    tp = TP(topic, 0)
    table = FakeTable()
    restorer = BulkRestorer(kafka_servers, "read_committed")
    assert await restorer.restore({tp: table}, {tp: 0}, {tp: 999}) == {tp: 999}
    assert max(table.offsets) <= 999 and table.data != want
    assert await restorer.restore({tp: table}, {tp: 1000}, {tp: end - 1}) == {tp: end - 1}
    assert table.data == want
    assert len(table.offsets) == len(set(table.offsets)), "no record applied twice"


async def test_nothing_to_read_and_no_time_leave_the_offsets_as_they_were(kafka_servers):
    topic, _, end = await transactional_changelog(kafka_servers)
    tp, empty = TP(topic, 0), TP(topic, 1)
    table = FakeTable()
    restorer = BulkRestorer(kafka_servers, "read_committed")
    assert await restorer.restore({empty: table}, {empty: 0}, {empty: -1}) == {empty: -1}
    assert await restorer.restore({tp: table}, {tp: 5}, {tp: end - 1}, time_limit_s=0) == {tp: 4}
    assert table.offsets == []
