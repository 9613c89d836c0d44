"""Publishing: per-partition record batches shipped at the end of a stage batch, in one Kafka
transaction per batch where the deployment allows it (`transactional_id`)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import aiokafka.producer.sender as aiokafka_sender
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from opentelemetry import trace

from services.core import metrics
from services.core.avro import AvroCodec
from services.core.config import Settings
from services.core.errors import MessageError, UnreachableError
from services.core.kafka.records import Outbound
from services.core.kafka.stage_names import stage_group_id
from services.core.telemetry import TraceDecision, headers_from_context
from services.core.topic_names import EXCHANGE_TOPIC_PREFIX

log = logging.getLogger(__name__)
tracer = trace.get_tracer("cipherstream")
# aiokafka waits a fixed 20 ms (`BACKOFF_OVERRIDE`) when a transaction's first AddPartitionsToTxn
# meets the last one's markers still being written (CONCURRENT_TRANSACTIONS, KAFKA-5477), which a
# stage committing a batch every few ms meets on nearly every batch. 2 ms, measured at 2,000
# events/s on the embedded Kafka: ingest's hop p50 47 -> 29 ms. aiokafka has no setting for it.
aiokafka_sender.BACKOFF_OVERRIDE = 0.002

TRANSACTION_TIMEOUT_MS = 10_000
TRANSACTION_RETRY_BACKOFF_MS = 5
BROKER_PROBE_TIMEOUT_S = 2.0

PUBLISHER_START_WAIT_S = 30.0


def cluster_of(settings: Settings, logical_topic: str) -> str:
    """The bootstrap servers of the cluster a topic lives on: exchange topics on the exchange
    cluster, everything else (dead letters included) on the party's own.

    >>> from services.core.config import load_settings
    >>> settings = load_settings(kafka_bootstrap_servers="own:9092", exchange_bootstrap_servers="shared:9093",
    ...                          redis_url="redis://localhost")
    >>> cluster_of(settings, "exchange.to_bank"), cluster_of(settings, "dlq.exchange.to_bank")
    ('shared:9093', 'own:9092')
    """
    return settings.exchange_servers if logical_topic.startswith(EXCHANGE_TOPIC_PREFIX) else settings.kafka_bootstrap_servers


def transactional_id(settings: Settings, service: str) -> str | None:
    """The transactional id of one worker of a service, or None where a batch cannot be one
    transaction: without exactly-once (the Tansu fallback), or when the exchange topics live on a
    cluster of their own (a transaction and its consumer offsets belong to one cluster; those
    services stay at-least-once with idempotent processing).

    >>> from services.core.config import load_settings
    >>> transactional_id(load_settings(kafka_bootstrap_servers="k:9092", redis_url="redis://r", worker_id="2"), "scoring")
    'cipherstream.scoring.2'
    """
    if not settings.exactly_once or settings.exchange_servers != settings.kafka_bootstrap_servers:
        return None
    return f"{stage_group_id(settings, service)}.{settings.worker_id}"


class Publisher:
    """Encodes messages into per-partition record batches and ships them at the end of a batch (`ship`).

    Messages are appended straight into aiokafka's record-batch builders (one per topic
    partition) rather than sent one `producer.send()` at a time, which cost every message a
    coroutine, a future and an accumulator lookup. Partitions are chosen as aiokafka's (and
    Java's) default partitioner does, murmur2 of the key, so every producer of a topic agrees on
    where a customer lives.
    """

    def __init__(self, settings: Settings, codec: AvroCodec, service: str, transactional_id: str | None = None) -> None:
        self.settings = settings
        self.codec = codec
        self.service = service
        # With an id, the own cluster's producer is transactional: each batch's outputs and input
        # offsets commit together (`begin`, `commit`), and a restarted worker with the same id
        # fences the transaction its predecessor left open.
        self.transactional_id = transactional_id
        self._in_transaction = False
        self._producers: dict[str, AIOKafkaProducer] = {}
        self._started = asyncio.Event()
        self._partitions: dict[str, list[int]] = {}  # full topic name -> its partitions, sorted
        self._open: dict[tuple[str, str, int], BatchBuilder] = {}  # (servers, topic, partition) -> batch
        # Record batches that filled up before `ship`: held, so nothing reaches the producer before
        # the batch's transaction begins (the previous one may still be committing).
        self._full: list[tuple[tuple[str, str, int], BatchBuilder]] = []
        self._pending: list[asyncio.Future[Any]] = []
        self._sent_per_topic: dict[str, int] = {}
        self._unkeyed = 0

    async def start(self) -> None:
        await self._producer_for_servers(self.settings.kafka_bootstrap_servers)
        self._started.set()

    async def _producer_for_servers(self, servers: str) -> AIOKafkaProducer:
        """One producer per cluster; the exchange cluster's is made on the first exchange message."""
        producer = self._producers.get(servers)
        if producer is None:
            transactional = self.transactional_id is not None and servers == self.settings.kafka_bootstrap_servers
            producer = AIOKafkaProducer(
                # No linger: the stage builds whole batches itself and ships them at the end of each batch.
                bootstrap_servers=servers, acks="all", linger_ms=0,
                max_batch_size=512 * 1024, max_request_size=4 * 1024 * 1024,
                # Idempotent on Kafka (no duplicate from a retried produce); the Tansu fallback has none.
                enable_idempotence=self.settings.exactly_once,
                transactional_id=self.transactional_id if transactional else None,
                # A worker killed mid-transaction and not restarted holds read_committed readers
                # back at most this long before the broker aborts its transaction.
                transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
                # A transaction begun while the last one's markers are still being written is told
                # CONCURRENT_TRANSACTIONS and retried after this; aiokafka's default, 100 ms, was
                # most of a hop's latency at 2,000 events/s.
                retry_backoff_ms=TRANSACTION_RETRY_BACKOFF_MS,
            )
            await producer.start()
            self._producers[servers] = producer
        return producer

    async def begin(self) -> None:
        """Open the batch's transaction (transactional publishers only)."""
        if self.transactional_id is None:
            return
        producer = await self._producer_for_servers(self.settings.kafka_bootstrap_servers)
        await producer.begin_transaction()
        self._in_transaction = True

    async def commit(self, offsets: dict[TopicPartition, int], group_id: str) -> None:
        """Commit the open transaction together with the input offsets it consumed."""
        producer = self._producers[self.settings.kafka_bootstrap_servers]
        if offsets:
            await producer.send_offsets_to_transaction(offsets, group_id)
        await producer.commit_transaction()
        self._in_transaction = False

    async def restart_transactions(self) -> None:
        """Drop the transactional producer and start a new one with the same id, waiting for the
        broker to fence the old one: its last transaction is then committed or aborted for good."""
        producer = self._producers.pop(self.settings.kafka_bootstrap_servers, None)
        self._in_transaction = False
        if producer is not None:
            with contextlib.suppress(Exception):  # it may be mid-commit or fenced; it is being replaced
                await asyncio.wait_for(producer.stop(), BROKER_PROBE_TIMEOUT_S)
        fresh = await self._producer_for_servers(self.settings.kafka_bootstrap_servers)
        await fresh.begin_transaction()  # waits for the new producer id, i.e. for the fence
        await fresh.abort_transaction()

    async def abort_open_transaction(self) -> None:
        """Stopping mid-batch: abort its transaction now, rather than hold read_committed readers
        back until the broker's timeout; the batch is replayed by whoever runs next."""
        producer = self._producers.get(self.settings.kafka_bootstrap_servers)
        if self._in_transaction and producer is not None:
            self._in_transaction = False
            with contextlib.suppress(Exception):  # stopping anyway: the next start fences what is left
                await asyncio.wait_for(producer.abort_transaction(), BROKER_PROBE_TIMEOUT_S)

    async def stop(self) -> None:
        self._started.clear()
        producers, self._producers = self._producers, {}
        for producer in producers.values():
            await producer.stop()

    async def send(self, outbound: Outbound, trace_decision: TraceDecision | None = None) -> None:
        """Encode and queue one message. A recorded trace gets a PRODUCER span whose context travels in
        the headers; an unrecorded one forwards the incoming traceparent unchanged."""
        value = None if outbound.message is None else self.codec.encode(outbound.message)
        if trace_decision is None or trace_decision.recorded:
            parent = trace_decision.parent if trace_decision else None
            with tracer.start_as_current_span(
                f"{outbound.topic} publish", context=parent, kind=trace.SpanKind.PRODUCER,
                attributes={"messaging.system": "kafka", "messaging.operation.type": "send",
                            "messaging.destination.name": outbound.topic, "cipherstream.service": self.service},
            ):
                await self.send_bytes(outbound.topic, outbound.key.encode(), value, headers_from_context())
        else:
            await self.send_bytes(outbound.topic, outbound.key.encode(), value, list(trace_decision.forwarded_headers))

    async def send_bytes(self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        if not self._producers:
            # A faust agent (reporting) may dead-letter its first message before the stage runner
            # has started the publisher: wait for the start rather than lose the agent.
            try:
                await asyncio.wait_for(self._started.wait(), PUBLISHER_START_WAIT_S)
            except TimeoutError as exc:
                raise UnreachableError(f"publisher not started within {PUBLISHER_START_WAIT_S:.0f} s") from exc
        servers = cluster_of(self.settings, topic)
        full_topic = self.settings.topic(topic)
        partitions = self._partitions.get(full_topic)
        if partitions is None:
            producer = await self._producer_for_servers(servers)
            partitions = self._partitions[full_topic] = sorted(await producer.partitions_for(full_topic))
        if key is None:
            self._unkeyed += 1
            partition = partitions[self._unkeyed % len(partitions)]
        else:
            partition = partitions[key_partition_index(key, len(partitions))]
        slot = (servers, full_topic, partition)
        batch = self._open.get(slot)
        if batch is None:
            batch = self._open[slot] = self._producers[servers].create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
            self._full.append((slot, self._open.pop(slot)))  # full: hold it and start the next one
            batch = self._open[slot] = self._producers[servers].create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise MessageError(f"message of {len(value or b'')} bytes does not fit a record batch",
                                   reason="too_large")
        self._sent_per_topic[topic] = self._sent_per_topic.get(topic, 0) + 1

    async def _ship(self, slot: tuple[str, str, int], batch: BatchBuilder) -> None:
        servers, full_topic, partition = slot
        self._pending.append(await self._producers[servers].send_batch(batch, full_topic, partition=partition))

    def discard_pending(self) -> None:
        """Forget what a failed batch queued (it will be replayed); errors of what it shipped are retrieved, not raised."""
        Shipment(self.service, self._pending, {}).abandon()
        self._pending = []
        self._open.clear()
        self._full.clear()
        self._sent_per_topic.clear()
        self._partitions.clear()  # a failure may have been a partition change: look them up again

    async def ship(self) -> Shipment:
        """Hand every open batch to the producer; the shipment says when the broker has them all."""
        held, self._full = self._full, []
        for slot, batch in [*held, *self._open.items()]:  # a partition's full batches before its open one
            await self._ship(slot, batch)
        self._open.clear()
        shipment = Shipment(self.service, self._pending, self._sent_per_topic)
        self._pending, self._sent_per_topic = [], {}
        return shipment


@dataclass
class Shipment:
    """The deliveries of one batch's output."""

    service: str
    deliveries: list[asyncio.Future[Any]]
    sent_per_topic: dict[str, int]

    async def delivered(self) -> None:
        """Wait for the broker's acknowledgement of every message; raise if any failed."""
        if self.deliveries:
            await asyncio.gather(*self.deliveries)
        for topic, count in self.sent_per_topic.items():
            metrics.EVENTS_OUT.labels(self.service, topic).inc(count)

    def abandon(self) -> None:
        """The batch will be replayed: retrieve the deliveries' errors so none is reported as unhandled."""
        for future in self.deliveries:
            future.add_done_callback(lambda done: done.cancelled() or done.exception())


def key_partition_index(key: bytes, partitions: int) -> int:
    """The index of a key's partition, as Kafka's default partitioner picks it (murmur2).

    >>> from aiokafka.partitioner import DefaultPartitioner
    >>> key_partition_index(b"C0000001", 4) == DefaultPartitioner()(b"C0000001", [0, 1, 2, 3], [0, 1, 2, 3])
    True
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions
