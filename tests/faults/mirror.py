"""A stand-in for MirrorMaker 2 between two embedded brokers (site A -> site B), for the site
failover test: it copies each partition's records in order (key, value, headers, timestamp) and
translates each consumer group's committed offsets the way MM2's checkpoints do, so the groups on
site B resume after the last record site A committed. It copies a snapshot (site A's writers are
gone), which is MM2 with zero replication lag."""
from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from services.core.clients import idempotence_available
from services.core.kafka import create_topics

# Per partition: source offsets copied, in order, and the target offset each one got.
OffsetMap = dict[TopicPartition, tuple[list[int], list[int]]]


async def mirror_topics(source: str, target: str, topics: Sequence[str], partitions: int) -> OffsetMap:
    await create_topics(target, list(topics), partitions)
    consumer = AIOKafkaConsumer(bootstrap_servers=source, enable_auto_commit=False, group_id=None)
    producer = AIOKafkaProducer(bootstrap_servers=target, acks="all", enable_idempotence=idempotence_available(), linger_ms=5)
    await consumer.start()
    await producer.start()
    offset_map: OffsetMap = {}
    try:
        assigned = [TopicPartition(topic, partition) for topic in topics for partition in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        pending = {tp for tp in assigned if ends[tp] > 0}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=500)
            for tp, messages in batches.items():
                sent = [await producer.send(tp.topic, value=m.value, key=m.key, partition=tp.partition,
                                            timestamp_ms=m.timestamp, headers=list(m.headers or ()))
                        for m in messages]
                written = await asyncio.gather(*sent)  # in order: one partition, one producer
                sources, targets = offset_map.setdefault(tp, ([], []))
                sources += [m.offset for m in messages]
                targets += [meta.offset for meta in written]
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        return offset_map
    finally:
        await producer.stop()
        await consumer.stop()


def translate(offset_map: OffsetMap, tp: TopicPartition, committed: int) -> int:
    """The target offset of the first copied record at or after the source's committed offset."""
    sources, targets = offset_map.get(tp, ([], []))
    index = bisect.bisect_left(sources, committed)
    return targets[index] if index < len(targets) else (targets[-1] + 1 if targets else 0)


async def mirror_group_offsets(source: str, target: str, groups: Sequence[str], offset_map: OffsetMap) -> dict[str, int]:
    """Commit each group's translated offsets on the target; return how many partitions per group.

    Committed offsets are read as a consumer of the group reads them, which works on both embedded
    brokers (the Tansu fallback closes the connection on the admin client's OffsetFetch version)."""
    copied: dict[str, int] = {}
    for group in groups:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        reader = AIOKafkaConsumer(bootstrap_servers=source, group_id=group, enable_auto_commit=False)
        await reader.start()
        try:
            for tp in offset_map:
                committed = await reader.committed(tp)
                if committed is not None and committed >= 0:
                    offsets[tp] = OffsetAndMetadata(translate(offset_map, tp, committed), "")
        finally:
            await reader.stop()
        if not offsets:
            continue
        writer = AIOKafkaConsumer(bootstrap_servers=target, group_id=group, enable_auto_commit=False)
        await writer.start()
        try:
            writer.assign(list(offsets))
            await writer.commit(offsets)
        finally:
            await writer.stop()
        copied[group] = len(offsets)
    return copied
