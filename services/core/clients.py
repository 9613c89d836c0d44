"""Plain aiokafka clients for tools outside the faust services: the generator, the demo summary,
tests and benchmarks. They speak the same wire format through the same codec."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...]


async def produce(
    bootstrap_servers: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]],
    headers: Sequence[tuple[str, bytes]] = (),
) -> int:
    """Send (key, value) pairs to one topic, batched; return how many were acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5,
                                max_batch_size=256 * 1024, enable_idempotence=False)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key, headers=list(headers)) for key, value in records]
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


async def consume(
    bootstrap_servers: str, topics: Sequence[str], *, until: Callable[[list[Record]], bool] | None = None,
    timeout_s: float = 30.0, idle_s: float | None = None,
) -> list[Record]:
    """Read topics from the beginning until `until(records)` holds, the timeout passes, or (with
    `idle_s`) nothing new arrives for that long. No group: nothing is committed."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    records: list[Record] = []
    try:
        partitions = []
        for topic in topics:
            known = await _partitions_for(consumer, topic)
            partitions += [TopicPartition(topic, partition) for partition in known]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=100, max_records=5000)
            for batch in batches.values():
                for message in batch:
                    records.append(Record(message.topic, message.partition, message.offset, message.key, message.value,
                                          message.timestamp, tuple(message.headers or ())))
                last_new = time.monotonic()
            if until is not None and until(records):
                break
            if idle_s is not None and time.monotonic() - last_new > idle_s:
                break
        return records
    finally:
        await consumer.stop()


async def _partitions_for(consumer: AIOKafkaConsumer, topic: str, timeout_s: float = 10.0) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka exposes no public refresh
        await asyncio.sleep(0.1)
    return set()
