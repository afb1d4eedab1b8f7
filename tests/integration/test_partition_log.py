"""PartitionLog against the real broker: holes and disorder in a batch are repaired from the log."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaProducer

from app.partition_log import PartitionLog, ReadBatch
from tests.integration.kafka_tools import new_topic, produce

pytestmark = pytest.mark.integration


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    key: bytes = b"k"


@dataclass
class Ev:
    message: Msg
    value: bytes


def batch(topic, offsets):
    return [Ev(Msg(topic, 0, o), f"v{o}".encode()) for o in offsets]


async def test_batch_with_a_hole_and_disorder_is_replaced_by_the_log(kafka_servers):
    topic = await new_topic(kafka_servers, "plog")
    await produce(kafka_servers, topic, [(0, b"k", f"v{i}".encode()) for i in range(10)])
    log = PartitionLog(kafka_servers, "read_committed")
    try:
        got = await log.contiguous(batch(topic, [3, 4, 7, 6, 9]), next_offset=2)
        assert [(e.message.offset, e.value) for e in got] == [(o, f"v{o}".encode())
                                                              for o in range(2, 10)]
        assert log.rereads == 1
        same = batch(topic, [2, 3, 4])
        assert await log.contiguous(same, next_offset=2) == same  # in order, no hole: as is
        assert await log.contiguous(batch(topic, [0, 1]), next_offset=2) == []  # replays
        assert log.rereads == 1
    finally:
        await log.close()


async def test_transaction_markers_are_not_taken_for_lost_records(kafka_servers):
    topic = await new_topic(kafka_servers, "plog-txn")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_servers,
                                transactional_id=f"plog-{uuid.uuid4().hex[:8]}")
    await producer.start()
    try:
        for chunk in range(3):  # three transactions: data, data, marker each time
            async with producer.transaction():
                for i in range(2):
                    await producer.send(topic, f"c{chunk}-{i}".encode(), partition=0)
        await producer.begin_transaction()  # and an aborted one
        await producer.send(topic, b"aborted", partition=0)
        await producer.abort_transaction()
    finally:
        await producer.stop()
    log = PartitionLog(kafka_servers, "read_committed")
    try:
        ends = await log.end_offsets(topic, [0])
        records = await log.read(topic, 0, 0, ends[0] - 1, lambda raw: raw)
        assert [r.value for r in records] == [f"c{c}-{i}".encode() for c in range(3)
                                              for i in range(2)]
        assert [r.message.offset for r in records] == [0, 1, 3, 4, 6, 7]  # 2, 5, 8: markers
        assert ends[0] == 11  # 9: the aborted record, 10: its marker
    finally:
        await log.close()


async def test_a_read_batch_known_to_cover_its_holes_is_used_without_reading_the_log(kafka_servers):
    topic = await new_topic(kafka_servers, "plog-covered")
    await produce(kafka_servers, topic, [(0, b"k", f"v{i}".encode()) for i in range(10)])
    log = PartitionLog(kafka_servers, "read_committed")
    try:
        covered = ReadBatch(batch(topic, [3, 5, 6]), covers_from=2)  # 2, 4: markers, say
        assert await log.contiguous(covered, next_offset=2) == list(covered)
        assert await log.contiguous(ReadBatch(batch(topic, [3, 5]), covers_from=3),
                                    next_offset=3) == batch(topic, [3, 5])
        assert log.rereads == 0
        # the state expects offset 1, before what the batch covers: 1 and 2 are read back
        later = ReadBatch(batch(topic, [3, 4]), covers_from=2)
        got = await log.contiguous(later, next_offset=1)
        assert [e.message.offset for e in got] == [1, 2, 3, 4] and log.rereads == 1
        # out of order: never trusted
        assert [e.message.offset for e in await log.contiguous(
            ReadBatch(batch(topic, [6, 5]), covers_from=5), next_offset=5)] == [5, 6]
        assert log.rereads == 2
    finally:
        await log.close()
