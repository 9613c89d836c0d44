"""Plain aiokafka clients for tools outside the faust services: the generator, the demo summary,
tests and benchmarks. They speak the same wire format through the same codec.

Not the stage runner: these read a topic to its end once or write a batch and return; no service
consumes a stream through them."""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


def idempotence_available() -> bool:
    """Idempotent producers everywhere but on the Tansu fallback, whose stack sets CIPHERSTREAM_EXACTLY_ONCE=false."""
    return os.environ.get("CIPHERSTREAM_EXACTLY_ONCE", "true").lower() != "false"


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
                                max_batch_size=256 * 1024, enable_idempotence=idempotence_available())
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
    # A downstream reader as a bank channel runs one: committed outputs only (aborted ones of a
    # crashed worker's transaction are never seen).
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None,
                                isolation_level="read_committed" if idempotence_available() else "read_uncommitted")
    await consumer.start()
    records: list[Record] = []
    try:
        partitions = []
        for topic in topics:
            known = await partitions_of(consumer, topic)
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


async def partitions_of(consumer: AIOKafkaConsumer, topic: str, timeout_s: float = 10.0) -> set[int]:
    """A topic's partitions as a consumer without a group learns them (it asks for metadata until
    the topic appears, or the timeout: then the empty set)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    return set()
