"""FetchedRecord against the real broker: the fields aiokafka's ConsumerRecord gives, and the
event shape the direct path hands to the pipelines."""

from __future__ import annotations

import dataclasses

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.consumer.fetcher import PartitionRecords
from faust.types import TP

from app import direct_batches, fetched_records
from app.fetched_records import FetchedRecord
from tests.integration.kafka_tools import new_topic

pytestmark = pytest.mark.integration


async def read_all(servers: str, topic: str, count: int) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=servers, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        records: list = []
        while len(records) < count:
            for batch in (await consumer.getmany(timeout_ms=5_000)).values():
                records += batch
        return records
    finally:
        await consumer.stop()


@pytest.fixture
def aiokafka_records():
    """aiokafka's own record construction back after the test (install is process-wide)."""
    original = PartitionRecords._consumer_record
    yield
    PartitionRecords._consumer_record = original


async def test_fetched_records_carry_what_consumer_records_carry(kafka_servers, aiokafka_records):
    topic = await new_topic(kafka_servers, "fetched")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b'{"a": 1}', key=b"user-1", timestamp_ms=1_700_000_000_000)
        await producer.send_and_wait(topic, None, key=b"user-2")  # a tombstone
        await producer.send_and_wait(topic, b"v", key=None, headers=[("h", b"x"), ("g", b"")])
    finally:
        await producer.stop()
    assert not fetched_records.installed()
    plain = await read_all(kafka_servers, topic, 3)
    fetched_records.install()
    assert fetched_records.installed()
    fetched = await read_all(kafka_servers, topic, 3)

    assert [type(r) for r in fetched] == [FetchedRecord] * 3
    assert [r._asdict() for r in fetched] == [dataclasses.asdict(r) for r in plain]
    assert fetched[0].serialized_key_size == 6 and fetched[1].serialized_value_size == -1
    assert fetched[2].headers == (("h", b"x"), ("g", b""))
    first = fetched[0]
    assert first.message is first and first.message.offset == 0 and first.value == b'{"a": 1}'
    assert first.tp == TP(topic, 0)


async def test_the_direct_path_hands_fetched_records_on_as_they_are(kafka_servers,
                                                                    aiokafka_records):
    topic = await new_topic(kafka_servers, "fetched-direct")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_servers)
    await producer.start()
    try:
        for i in range(4):
            await producer.send_and_wait(topic, f"v{i}".encode(), key=b"k")
    finally:
        await producer.stop()
    fetched_records.install()
    records = await read_all(kafka_servers, topic, 4)
    batch = direct_batches.as_events(TP(topic, 0), records, generation=1)
    assert all(a is b for a, b in zip(batch, records)) and len(batch) == 4
    assert [(e.message.partition, e.message.offset, e.message.key, e.value) for e in batch] == [
        (0, i, b"k", f"v{i}".encode()) for i in range(4)]
