"""Kafka plumbing every service shares: the faust app, batched stages, publishing, dead letters.

Each service is a faust app (lifecycle, web server, tasks). Its hot path is a `StageRunner`:
one aiokafka consumer over the service's input topics on each cluster it reads (its party's own,
and the exchange cluster for `exchange.*` topics when EXCHANGE_BOOTSTRAP_SERVERS names one), read in batches. For each batch it
decodes every message (a bad one goes to `dlq.<topic>` with its bytes and the reason), hands
each topic's decoded batch to that stage's handler (pure logic plus Redis), publishes what the
handler returns and, while the next batch is processed, waits until the broker has acknowledged
all of it and only then commits the offsets. On Apache Kafka a batch is one transaction: its
outputs and input offsets commit together and consumers read committed only, so a crash aborts
the batch and its replay is the only copy anyone reads (docs/reliability.md). Without
transactions (the Tansu fallback) a crash before the commit replays the batch: at-least-once,
with idempotent processing downstream.

Why not faust's own streams: measured on this machine, `stream.take_events` tops out at about
9,300 events/s with no work at all, against 48,500/s for a batched aiokafka consume-and-produce
loop; a stage must reach half of the latter. faust stays the framework around it.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiokafka.producer.sender as aiokafka_sender
import faust
import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from opentelemetry import trace
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.core import metrics
from services.core.avro import AvroCodec
from services.core.catalog import TOPICS, dlq_name
from services.core.config import Settings
from services.core.errors import MessageError, UnreachableError
from services.core.faust_transport import TunedApp
from services.core.logs import facts
from services.core.messages import DeadLetter
from services.core.telemetry import TraceDecision, decide_trace, headers_from_context, root_sample_ratio

log = logging.getLogger(__name__)
tracer = trace.get_tracer("cipherstream")
# aiokafka waits a fixed 20 ms (`BACKOFF_OVERRIDE`) when a transaction's first AddPartitionsToTxn
# meets the last one's markers still being written (CONCURRENT_TRANSACTIONS, KAFKA-5477), which a
# stage committing a batch every few ms meets on nearly every batch. 2 ms, measured at 2,000
# events/s on the embedded Kafka: ingest's hop p50 47 -> 29 ms. aiokafka has no setting for it.
aiokafka_sender.BACKOFF_OVERRIDE = 0.002
M = TypeVar("M")

# Errors that mean "a part is down", not "this message is bad": retry the batch, never dead-letter it.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, UnreachableError, KafkaError, ConnectionError, asyncio.TimeoutError,
)
# A batch that failed for a transient reason is replayed after this backoff, doubling up to the cap.
RETRY_BACKOFF_FIRST_S = 0.1
RETRY_BACKOFF_MAX_S = 2.0
BROKER_PROBE_INTERVAL_S = 2.0
BROKER_PROBE_TIMEOUT_S = 2.0
TRANSACTION_TIMEOUT_MS = 10_000
# A message sent before `Publisher.start()` (a faust agent dead-lettering before the app task that
# starts the stages has run) waits this long for it instead of failing.
PUBLISHER_START_WAIT_S = 30.0
TRANSACTION_RETRY_BACKOFF_MS = 5


def cluster_of(settings: Settings, logical_topic: str) -> str:
    """The bootstrap servers of the cluster a topic lives on: exchange topics on the exchange
    cluster, everything else (dead letters included) on the party's own.

    >>> from services.core.config import load_settings
    >>> settings = load_settings(kafka_bootstrap_servers="own:9092", exchange_bootstrap_servers="shared:9093",
    ...                          redis_url="redis://localhost")
    >>> cluster_of(settings, "exchange.to_bank"), cluster_of(settings, "dlq.exchange.to_bank")
    ('shared:9093', 'own:9092')
    """
    spec = TOPICS.get(logical_topic)
    return settings.exchange_servers if spec is not None and spec.owner == "exchange" else settings.kafka_bootstrap_servers


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def build_app(settings: Settings, service: str, uses_faust_kafka: bool = False, **extra: Any) -> faust.App:
    """A faust app tuned for the stages' batches, on Apache Kafka or the Tansu fallback."""
    (settings.data_dir / service).mkdir(parents=True, exist_ok=True)
    app = TunedApp(
        f"cipherstream-{settings.topic_prefix}{service}",
        # The stages consume through StageRunner; faust's own Kafka clients start only for apps
        # that declare faust tables (their changelogs need them).
        uses_kafka=uses_faust_kafka,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
        store="memory://",
        datadir=str(settings.data_dir / service),
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_bind="0.0.0.0",
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=True,
        # Not faust's exactly-once: it commits a partition's transaction without the changelog
        # rows still in its producer buffer (they land in the next transaction, which a kill
        # aborts, while the source offsets stay committed), and it restores a table only up to
        # the last stable offset its consumer happened to fetch before the rebalance (none: no
        # restore at all). At-least-once with the changelog acknowledged before every commit
        # (faust_transport.ChangelogFirstProducer) and rows that keep their last source offset
        # (reporting/tallies.py) counts each message once. Still read_committed on Kafka, so a
        # table never counts an output of an aborted upstream transaction.
        processing_guarantee="at_least_once",
        read_committed=settings.exactly_once,
        idempotent=settings.exactly_once,
        producer_acks=-1,
        producer_linger=0.002,
        broker_rebalance_timeout=settings.broker_rebalance_timeout_s,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=settings.broker_heartbeat_interval_s,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        # Every table partition is also kept, warm, by one other replica: a kill moves it there
        # without a replay of its changelog.
        table_standby_replicas=1,
        **extra,
    )
    return app


async def create_topics(bootstrap_servers: str, names: Sequence[str], partitions: int, timeout_s: float = 15.0) -> None:
    """Create the topics that do not exist yet (the embedded broker; production provisions them)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [NewTopic(name, partitions, 1) for name in names if name not in existing]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


def all_topic_names(settings: Settings, owners: Sequence[str] = ("bank", "partner", "exchange")) -> list[str]:
    return [settings.topic(spec.name) for spec in TOPICS.values() if spec.owner in owners]


@dataclass(frozen=True, slots=True)
class Inbound(Generic[M]):
    """One decoded message with where it came from."""

    message: M
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    raw_value: bytes | None


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message to publish: a logical topic name (the prefix is applied on send) and a key.

    `message=None` publishes a tombstone (a null value), which erases the key from a compacted topic.
    """

    topic: str
    key: str
    message: Any


HandlerResult = list[Outbound] | MessageError
Decoder = Callable[[bytes | None], M]
Handler = Callable[[list[Inbound[M]]], Awaitable[list[HandlerResult]]]


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
        self._partitions: dict[str, list[int]] = {}  # full topic name -> its partitions, sorted
        self._open: dict[tuple[str, str, int], BatchBuilder] = {}  # (servers, topic, partition) -> batch
        # Record batches that filled up before `ship`: held, so nothing reaches the producer before
        # the batch's transaction begins (the previous one may still be committing).
        self._full: list[tuple[tuple[str, str, int], BatchBuilder]] = []
        self._pending: list[asyncio.Future[Any]] = []
        self._sent_per_topic: dict[str, int] = {}
        self._unkeyed = 0
        self._started = asyncio.Event()

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
        if not self._started.is_set():
            # reporting's agent runs as soon as faust has its partitions, maybe before the app task
            # that starts the stages (and this publisher) has: its dead letters wait for the start.
            try:
                await asyncio.wait_for(self._started.wait(), PUBLISHER_START_WAIT_S)
            except asyncio.TimeoutError:
                raise UnreachableError(f"publisher not started within {PUBLISHER_START_WAIT_S:.0f} s") from None
        if not self._producers:  # between the two producers of `restart_transactions`
            raise UnreachableError("publisher has no producer")
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


class DeadLetters:
    """Sends what cannot be processed to `dlq.<topic>`, whole, with the reason; counts and logs it."""

    def __init__(self, publisher: Publisher, service: str) -> None:
        self.publisher = publisher
        self.service = service

    async def send(
        self, logical_topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
        error: BaseException, reason: str | None = None,
    ) -> None:
        reason = reason or (error.reason if isinstance(error, MessageError) else "unhandled_error")
        dead_letter = DeadLetter(
            topic=logical_topic, partition=partition, offset=offset, key=key, value=value, reason=reason,
            error_type=type(error).__name__, detail=str(error)[:2000], service=self.service, failed_at_ms=now_ms(),
        )
        await self.publisher.send(Outbound(dlq_name(logical_topic), (key or b"").decode("utf-8", "replace"), dead_letter))
        metrics.DEAD_LETTERS.labels(self.service, logical_topic, reason).inc()
        log.warning("dead letter", extra=facts(topic=logical_topic, partition=partition, offset=offset, reason=reason))


@dataclass
class Stage(Generic[M]):
    """One input topic of a service: how to decode its messages and what to do with a batch."""

    service: str
    topic: str  # logical name
    decode: Decoder[M]
    handle: Handler[M]
    publisher: Publisher
    dead_letters: DeadLetters
    # Called as a batch's output is shipped; returns the work to do once the broker has
    # acknowledged that output (e.g. mark the batch's offers as sent).
    take_confirmation: Callable[[], Callable[[], Awaitable[None]]] | None = None

    async def process(self, records: Sequence[ConsumerRecord[bytes, bytes]], sample_ratio: float = 1.0) -> None:
        """Decode, handle and publish one batch (the runner ships and settles it)."""
        started = time.perf_counter()
        started_ns = time.time_ns()
        metrics.EVENTS_IN.labels(self.service, self.topic).inc(len(records))
        inbounds: list[Inbound[M]] = []
        decisions: list[TraceDecision] = []
        for record in records:
            try:
                decoded = self.decode(record.value)
            except MessageError as error:
                await self.dead_letters.send(self.topic, record.partition, record.offset, record.key, record.value, error)
                continue
            inbounds.append(Inbound(decoded, record.key, self.topic, record.partition, record.offset,
                                    record.timestamp, record.value))
            decisions.append(decide_trace(record.headers, sample_ratio, random.getrandbits))
        if inbounds:
            results = await self._handle_isolating_poison(inbounds)
            for inbound, decision, result in zip(inbounds, decisions, results, strict=True):
                await self._publish(inbound, decision, result, started_ns)
        metrics.PROCESSING_SECONDS.labels(self.service, self.topic).observe(time.perf_counter() - started)

    async def _publish(self, inbound: Inbound[M], decision: TraceDecision, result: HandlerResult, started_ns: int) -> None:
        """Publish one inbound's results; a recorded trace gets a CONSUMER span begun with the batch."""
        if isinstance(result, MessageError):
            await self.dead_letters.send(self.topic, inbound.partition, inbound.offset, inbound.key, inbound.raw_value, result)
            return
        if not decision.recorded:
            for outbound in result:
                await self.publisher.send(outbound, decision)
            return
        span = tracer.start_span(
            f"{self.topic} process", context=decision.parent, kind=trace.SpanKind.CONSUMER, start_time=started_ns,
            attributes={
                "messaging.system": "kafka", "messaging.operation.type": "process",
                "messaging.destination.name": self.topic, "messaging.kafka.offset": inbound.offset,
                "messaging.destination.partition.id": str(inbound.partition), "cipherstream.service": self.service,
            },
        )
        child = TraceDecision(trace.set_span_in_context(span), ())
        for outbound in result:
            await self.publisher.send(outbound, child)
        span.end()

    async def _handle_isolating_poison(self, inbounds: list[Inbound[M]]) -> list[HandlerResult]:
        """Handle the batch; if a bug trips on one message, find it and dead-letter it alone."""
        try:
            results = await self.handle(inbounds)
        except TRANSIENT_ERRORS:
            raise
        except Exception:  # a bug on some message: isolate it rather than lose the batch
            if len(inbounds) == 1:
                raise
            results = []
            for inbound in inbounds:
                try:
                    results.extend(await self.handle([inbound]))
                except TRANSIENT_ERRORS:
                    raise
                except Exception as error:
                    log.exception("message failed processing", extra=facts(topic=self.topic, offset=inbound.offset))
                    results.append(MessageError(f"{type(error).__name__}: {error}", reason="processing_error"))
        if len(results) != len(inbounds):
            raise AssertionError(f"handler returned {len(results)} results for {len(inbounds)} messages")
        return results




class StageRunner(mode.Service):
    """The service's hot path: one consumer over every stage's topic, batch by batch.

    Per batch: each topic's records go to its stage and the outputs are shipped. The batch is
    then settled while the next one is processed (at once if a stage must confirm its outputs):
    once the broker has acknowledged every output, the stages' confirmations run and the offsets
    are committed. Commit-after-acknowledgement is what makes delivery at-least-once; overlapping
    it with the next batch keeps the stage busy instead of waiting two round trips per batch
    (measured at 2,000 events/s: acknowledgement and commit were ~10 ms of every ~25 ms cycle).
    """

    def __init__(self, settings: Settings, service: str, publisher: Publisher, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.service = service
        self.publisher = publisher
        # Exactly once: each batch is one transaction, settled before the next batch begins.
        self.transactional = publisher.transactional_id is not None
        self.stages: dict[str, Stage[Any]] = {}
        self.consumers: list[AIOKafkaConsumer] = []
        self.sample_ratio = root_sample_ratio()
        self.batches = 0
        # True while a part (Redis, Kafka) is failing and batches are being replayed; /readyz says 503.
        self.degraded = False
        # One batch at a time across clusters: the publisher's open batches and a replay cover one batch.
        self._one_batch = asyncio.Lock()
        # Per consumer: the batch processed and shipped, not yet acknowledged and committed.
        self._unsettled: dict[int, ProcessedBatch] = {}
        # Whether every cluster answered the last metadata probe (an idle consumer keeps its
        # assignment when the broker dies, so readiness asks the broker itself).
        self.brokers_reachable = True

    def add(self, stage: Stage[Any]) -> None:
        self.stages[self.settings.topic(stage.topic)] = stage

    @property
    def assigned(self) -> bool:
        return bool(self.consumers) and all(consumer.assignment() for consumer in self.consumers)

    async def on_start(self) -> None:
        await self.publisher.start()
        settings = self.settings
        by_cluster: dict[str, list[str]] = {}
        for topic, stage in self.stages.items():
            by_cluster.setdefault(cluster_of(settings, stage.topic), []).append(topic)
        for servers, topics in by_cluster.items():
            consumer = AIOKafkaConsumer(
                bootstrap_servers=servers,
                group_id=stage_group_id(settings, self.service), client_id=f"cipherstream-{self.service}",
                enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=settings.fetch_max_wait_ms,
                max_poll_records=settings.batch_max_events, max_partition_fetch_bytes=4 * 1024 * 1024,
                # Only what upstream transactions committed (aborted outputs of a crashed worker are skipped).
                isolation_level="read_committed" if settings.exactly_once else "read_uncommitted",
                session_timeout_ms=int(settings.broker_session_timeout_s * 1000),
                rebalance_timeout_ms=int(settings.broker_rebalance_timeout_s * 1000),
                heartbeat_interval_ms=int(settings.broker_heartbeat_interval_s * 1000),
            )
            consumer.subscribe(topics, listener=SettleBeforeRevoke(self, consumer))
            await consumer.start()
            self.consumers.append(consumer)

    async def on_started(self) -> None:
        for consumer in self.consumers:
            self.add_future(self._consume(consumer))
        self.add_future(self._probe_brokers())

    async def _probe_brokers(self) -> None:
        while not self.should_stop:
            reachable = True
            for consumer in self.consumers:
                try:
                    await asyncio.wait_for(consumer.topics(), BROKER_PROBE_TIMEOUT_S)
                except (KafkaError, asyncio.TimeoutError, OSError):
                    reachable = False
            if reachable != self.brokers_reachable:
                log.warning("broker reachability changed", extra=facts(service=self.service, reachable=reachable))
            self.brokers_reachable = reachable
            await asyncio.sleep(BROKER_PROBE_INTERVAL_S)

    async def on_stop(self) -> None:
        for consumer in self.consumers:
            await consumer.stop()
        await self.publisher.stop()

    async def settle_before_revoke(self, consumer: AIOKafkaConsumer) -> None:
        """A rebalance takes partitions away: finish the batch in hand and settle the one shipped,
        so their offsets are committed by us, now, and not by a worker that no longer owns them."""
        async with self._one_batch:
            pending = self._unsettled.pop(id(consumer), None)
            if pending is not None:
                try:
                    await self.settle(consumer, pending)
                except TRANSIENT_ERRORS:  # its new owner replays it from the last commit
                    pending.abandon()

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        window_ms = int(self.settings.batch_window_s * 1000)
        backoff_s = RETRY_BACKOFF_FIRST_S
        key = id(consumer)
        while not self.should_stop:
            batches = await consumer.getmany(timeout_ms=window_ms, max_records=self.settings.batch_max_events)
            processed: ProcessedBatch | None = None
            unsettled: ProcessedBatch | None = None
            try:
                async with self._one_batch:
                    if batches:
                        processed = await self.process(batches)  # its outputs are held, not yet sent
                    unsettled = self._unsettled.pop(key, None)
                    if unsettled is not None:
                        await self.settle(consumer, unsettled)
                        unsettled = None
                    if processed is not None:
                        await self.ship(processed)
                        if processed.confirmations:
                            # Settled at once: between the broker having an offer and Redis knowing it,
                            # a crash makes the replay send that offer again; that window stays one round trip.
                            await self.settle(consumer, processed)
                            processed = None
            except TRANSIENT_ERRORS as error:
                # Nothing since the last settled batch is committed: go back to the oldest uncommitted
                # record of each partition and try again later. In a transaction what was sent is
                # aborted; without one, outputs that did reach the broker are sent again (at-least-once).
                self.degraded = True
                self.publisher.discard_pending()
                earlier = [batch for batch in (processed, unsettled, self._unsettled.pop(key, None)) if batch is not None]
                for batch in earlier:
                    batch.abandon()
                try:
                    if self.transactional:
                        await self.replay_from_committed(consumer)
                    else:
                        self.replay_from_memory(consumer, batches, earlier)
                except TRANSIENT_ERRORS:
                    pass  # the broker is away too: the next round tries again
                log.warning("transient failure, batch will be replayed",
                            extra=facts(service=self.service, error=type(error).__name__, backoff_s=backoff_s))
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, RETRY_BACKOFF_MAX_S)
                continue
            if processed is not None:
                self._unsettled[key] = processed
            if self.degraded and batches:  # a batch went through (dispatch's is settled already: processed is None)
                log.info("recovered", extra=facts(service=self.service))
                self.degraded = False
                backoff_s = RETRY_BACKOFF_FIRST_S
        unsettled = self._unsettled.pop(key, None)
        if unsettled is not None:  # stopping: settle the last batch rather than replay it on restart
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self.settle(consumer, unsettled)
        await self.publisher.abort_open_transaction()

    async def replay_from_committed(self, consumer: AIOKafkaConsumer) -> None:
        """After a failure in a transaction: whether the last commit went through is known only to
        the broker. A new producer with the same transactional id resolves it (the broker finishes or
        aborts what the old one left), then every partition goes back to its committed offset."""
        await self.publisher.restart_transactions()
        assigned = consumer.assignment()
        for partition, offset in (await consumer.seek_to_committed(*assigned)).items():
            if offset is None:
                await consumer.seek_to_beginning(partition)

    def replay_from_memory(self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
                           earlier: list[ProcessedBatch]) -> None:
        """Without transactions: back to the oldest record not yet committed of each partition."""
        replay_from = {partition: records[0].offset for partition, records in batches.items()}
        for batch in earlier:
            replay_from |= batch.first_offsets
        assigned = consumer.assignment()
        for partition, offset in replay_from.items():
            if partition in assigned:  # one revoked meanwhile is replayed by its new owner
                consumer.seek(partition, offset)

    async def process(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> ProcessedBatch:
        """Decode and handle one batch; its outputs wait in the publisher until `ship`."""
        by_topic: dict[str, list[ConsumerRecord[bytes, bytes]]] = {}
        for partition, records in batches.items():
            by_topic.setdefault(partition.topic, []).extend(records)
        for topic, records in by_topic.items():
            await self.stages[topic].process(records, self.sample_ratio)
        takers = [self.stages[topic].take_confirmation for topic in by_topic]
        return ProcessedBatch(
            confirmations=[take() for take in takers if take is not None],
            first_offsets={partition: records[0].offset for partition, records in batches.items()},
            next_offsets={partition: records[-1].offset + 1 for partition, records in batches.items()},
        )

    async def ship(self, batch: ProcessedBatch) -> None:
        """Send the batch's outputs; in a transaction, with its offsets, and start the commit, which
        runs while the next batch is fetched and processed (`settle` waits for it)."""
        await self.publisher.begin()
        batch.shipment = await self.publisher.ship()
        if self.transactional:
            batch.committed = asyncio.ensure_future(
                self.publisher.commit(batch.next_offsets, stage_group_id(self.settings, self.service)))

    async def settle(self, consumer: AIOKafkaConsumer, batch: ProcessedBatch) -> None:
        """Once the broker has the batch's output: run its confirmations, then commit its offsets.

        In a transaction the offsets commit with the outputs, before the confirmations: a crash
        after the commit leaves an offer `pending` in Redis but delivered once; one before it
        aborts the offer and the replay re-emits it (contact_policy.py)."""
        if batch.committed is not None:
            await batch.committed  # the commit waits for every output itself
        if batch.shipment is not None:
            await batch.shipment.delivered()
        for confirm in batch.confirmations:
            await confirm()
        if not self.transactional:
            await consumer.commit(batch.next_offsets)
        self.batches += 1
        for partition, position in batch.next_offsets.items():
            highwater = consumer.highwater(partition) if partition in consumer.assignment() else None
            if highwater is not None:
                metrics.CONSUMER_LAG.labels(self.service, partition.topic, str(partition.partition)).set(max(0, highwater - position))


class SettleBeforeRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Runs the runner's `settle_before_revoke` when a rebalance takes partitions from this consumer."""

    def __init__(self, runner: StageRunner, consumer: AIOKafkaConsumer) -> None:
        self.runner = runner
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if revoked:
            await self.runner.settle_before_revoke(self.consumer)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None


@dataclass
class ProcessedBatch:
    """A handled batch: its outputs held, then shipped (and, in a transaction, committing), then settled."""

    confirmations: list[Callable[[], Awaitable[None]]]
    first_offsets: dict[TopicPartition, int]  # where a replay of this batch starts
    next_offsets: dict[TopicPartition, int]  # what to commit once it is delivered
    shipment: Shipment | None = None
    committed: asyncio.Future[None] | None = None  # the transaction's commit, under way

    def abandon(self) -> None:
        """The batch will be replayed: retrieve its failures so none is reported as unhandled."""
        if self.shipment is not None:
            self.shipment.abandon()
        if self.committed is not None:
            self.committed.add_done_callback(lambda done: done.cancelled() or done.exception())


def stage_group_id(settings: Settings, service: str) -> str:
    """The consumer group of a service's stages (all its workers share it)."""
    return f"cipherstream.{settings.topic_prefix}{service}"


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


def avro_decoder(codec: AvroCodec, message_type: type[M]) -> Decoder[M]:
    def decode(value: bytes | None) -> M:
        return codec.decode(value, message_type)

    return decode


def tombstone_decoder(codec: AvroCodec, message_type: type[M]) -> Decoder[M | None]:
    """For compacted topics where a null value is a tombstone (the key is erased)."""
    def decode(value: bytes | None) -> M | None:
        return None if value is None else codec.decode(value, message_type)

    return decode
