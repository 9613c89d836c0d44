"""The hot path on the real broker: outputs land where Kafka's default partitioner puts them, and a
batch that fails to settle (its acknowledgement lost while the next batch was already processed)
is replayed, so nothing is lost and the offsets still reach the end."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.core.avro import AvroCodec
from services.core.clients import Record, consume, idempotence_available
from services.core.config import Settings
from services.core.kafka import (
    DeadLetters,
    HandlerResult,
    Inbound,
    Outbound,
    Publisher,
    Shipment,
    Stage,
    StageRunner,
    avro_decoder,
    create_topics,
    stage_group_id,
)
from services.protocol.stream_messages import CustomerEvent

SERVICE = "runner-test"
INPUT, OUTPUT = "customer.events", "runner.out"
EVENTS = 300


def event(index: int) -> CustomerEvent:
    return CustomerEvent(f"e{index}", f"C{index % 37:04d}", "app_login", index, "GBP", None, 0, 0, "raw", 0, index)


async def passthrough(batch: list[Inbound[CustomerEvent]]) -> list[HandlerResult]:
    return [[Outbound(OUTPUT, inbound.message.customer_id, inbound.message)] for inbound in batch]


async def no_confirmation_work() -> None:
    return None


async def run_stage(settings: Settings, codec: AvroCodec, publisher: Publisher,
                    confirmed: bool = False) -> tuple[list[Record], StageRunner]:
    """Feed EVENTS events through a pass-through stage (one that confirms its outputs, as dispatch
    does, if `confirmed`); return its output once all of it is there, and the stopped runner."""
    await create_topics(settings.kafka_bootstrap_servers, [settings.topic(INPUT), settings.topic(OUTPUT)],
                        settings.topic_partitions)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_idempotence=idempotence_available())
    await producer.start()
    try:
        for index in range(EVENTS):
            message = event(index)
            await producer.send(settings.topic(INPUT), codec.encode(message), key=message.customer_id.encode())
        await producer.flush()
    finally:
        await producer.stop()
    runner = StageRunner(settings, SERVICE, publisher)
    runner.add(Stage(SERVICE, INPUT, avro_decoder(codec, CustomerEvent), passthrough, publisher,
                     DeadLetters(publisher, SERVICE),
                     take_confirmation=(lambda: no_confirmation_work) if confirmed else None))
    await runner.start()
    try:
        records = await consume(settings.kafka_bootstrap_servers, [settings.topic(OUTPUT)],
                                until=lambda got: len(event_ids(codec, got)) >= EVENTS, timeout_s=60)
    finally:
        await asyncio.sleep(0.5)  # let the last batch settle before stopping
        await runner.stop()
    return records, runner


def event_ids(codec: AvroCodec, records: list[Record]) -> set[str]:
    return {codec.decode(record.value, CustomerEvent).event_id for record in records}


async def committed(settings: Settings) -> int:
    """The stage group's committed offsets on the input, summed (read as a consumer of the group,
    which also works on the Tansu fallback's smoke run: it closes the connection on the admin
    client's OffsetFetch version)."""
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                              group_id=stage_group_id(settings, SERVICE), enable_auto_commit=False)
    await reader.start()
    try:
        partitions = [TopicPartition(settings.topic(INPUT), index) for index in range(settings.topic_partitions)]
        return sum([await reader.committed(partition) or 0 for partition in partitions])
    finally:
        await reader.stop()


@pytest.mark.tansu_smoke
async def test_outputs_land_on_the_partition_kafkas_default_partitioner_picks(settings: Settings, codec: AvroCodec) -> None:
    settings = settings.model_copy(update={"topic_partitions": 4, "batch_max_events": 50})
    records, _ = await run_stage(settings, codec, Publisher(settings, codec, SERVICE))
    reference = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_idempotence=idempotence_available())
    await reference.start()
    try:
        for key in sorted({record.key for record in records if record.key is not None}):
            delivered = await (await reference.send(settings.topic(OUTPUT), b"reference", key=key))
            assert {record.partition for record in records if record.key == key} == {delivered.partition}, key
    finally:
        await reference.stop()
    assert await committed(settings) == EVENTS


class LosesOneBatch(Publisher):
    """Fault injection: the third batch's output never reaches the broker, and its delivery fails
    (a transient Kafka error) only when the runner settles it, after the next batch was processed."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.shipments = 0

    async def ship(self) -> Shipment:
        self.shipments += 1
        if self.shipments != 3:
            return await super().ship()
        self._open.clear()  # dropped on the way to the broker
        lost = asyncio.get_running_loop().create_future()
        lost.set_exception(ConnectionError("batch lost"))
        return Shipment(self.service, [lost], {})


@pytest.mark.parametrize("confirmed", [False, True], ids=["settled-with-the-next-batch", "settled-at-once"])
async def test_a_batch_that_fails_to_settle_is_replayed_and_nothing_is_lost(settings: Settings, codec: AvroCodec,
                                                                           confirmed: bool) -> None:
    settings = settings.model_copy(update={"batch_max_events": 20})
    publisher = LosesOneBatch(settings, codec, SERVICE)
    records, runner = await run_stage(settings, codec, publisher, confirmed)
    assert publisher.shipments > 3
    # The third batch's output only reached the broker through the replay.
    assert event_ids(codec, records) == {f"e{index}" for index in range(EVENTS)}
    assert await committed(settings) == EVENTS
    assert not runner.degraded  # recovered: /readyz is 200 again
