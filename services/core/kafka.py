"""Kafka plumbing every service shares: the faust app, batched stages, publishing, dead letters.

A stage is a thin faust agent: take a batch of events, decode each (a bad one goes to
`dlq.<topic>` with its bytes and the reason), hand the decoded batch to a handler (pure logic
plus Redis), publish what it returns with the trace context in the headers, wait until the
broker has everything, and only then let faust ack the batch. A crash before the flush replays
the batch: at-least-once delivery, with idempotent processing downstream.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from opentelemetry import context as otel_context
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
from services.core.telemetry import context_from_headers, headers_from_context

log = logging.getLogger(__name__)
tracer = trace.get_tracer("cipherstream")
M = TypeVar("M")

# Errors that mean "a part is down", not "this message is bad": retry the batch, never dead-letter it.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, UnreachableError, KafkaError, ConnectionError, asyncio.TimeoutError,
)
RETRY_BACKOFF_S = (0.1, 0.25, 0.5, 1.0, 2.0)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def build_app(settings: Settings, service: str, **extra: Any) -> faust.App:
    """A faust app tuned for at-least-once batches on Kafka or the embedded Tansu broker."""
    (settings.data_dir / service).mkdir(parents=True, exist_ok=True)
    app = TunedApp(
        f"cipherstream-{settings.topic_prefix}{service}",
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
        # Tansu fails idempotent producers (UnknownError); at-least-once plus idempotent
        # processing is the design on production Kafka too.
        producer_acks=-1,
        producer_linger=0.002,
        broker_rebalance_timeout=settings.broker_rebalance_timeout_s,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=settings.broker_heartbeat_interval_s,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
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
    """Encodes messages and hands them to the producer, keeping delivery futures until `flush`."""

    def __init__(self, app: faust.App, settings: Settings, codec: AvroCodec, service: str) -> None:
        self.app = app
        self.settings = settings
        self.codec = codec
        self.service = service
        self._pending: list[Awaitable[Any]] = []

    async def send(self, outbound: Outbound, context: otel_context.Context | None = None) -> None:
        """Encode and send one message inside a PRODUCER span whose context travels in the headers."""
        value = None if outbound.message is None else self.codec.encode(outbound.message)
        with tracer.start_as_current_span(
            f"{outbound.topic} publish", context=context, kind=trace.SpanKind.PRODUCER,
            attributes={"messaging.system": "kafka", "messaging.operation.type": "send",
                        "messaging.destination.name": outbound.topic, "cipherstream.service": self.service},
        ):
            await self.send_bytes(outbound.topic, outbound.key.encode(), value, headers_from_context())

    async def send_bytes(self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        topic_name = self.settings.topic(topic)
        future = await self.app.producer.send(topic_name, key, value, partition=None, timestamp=None, headers=headers)
        self._pending.append(future)
        metrics.EVENTS_OUT.labels(self.service, topic).inc()

    async def flush(self) -> None:
        """Wait until the broker has acknowledged everything sent so far."""
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)


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
    # Called once the broker has acknowledged the batch's output (e.g. mark offers as sent).
    after_flush: Callable[[], Awaitable[None]] | None = None

    async def process(self, events: Sequence[faust.types.EventT]) -> None:
        """Decode, handle, publish and flush one batch; transient failures retry the whole batch."""
        started = time.perf_counter()
        started_ns = time.time_ns()
        inbounds: list[Inbound[M]] = []
        contexts: list[otel_context.Context] = []
        for event in events:
            message = event.message
            metrics.EVENTS_IN.labels(self.service, self.topic).inc()
            try:
                decoded = self.decode(message.value)
            except MessageError as error:
                await self.dead_letters.send(self.topic, message.partition, message.offset, message.key, message.value, error)
                continue
            inbounds.append(Inbound(decoded, message.key, self.topic, message.partition, message.offset,
                                    int(message.timestamp * 1000), message.value))
            contexts.append(context_from_headers(event.headers))
        if inbounds:
            results = await self._handle_with_retry(inbounds)
            for inbound, context, result in zip(inbounds, contexts, results, strict=True):
                await self._publish(inbound, context, result, started_ns)
        await self.publisher.flush()
        if self.after_flush is not None:
            await self.after_flush()
        metrics.PROCESSING_SECONDS.labels(self.service, self.topic).observe(time.perf_counter() - started)

    async def _publish(self, inbound: Inbound[M], context: otel_context.Context, result: HandlerResult,
                       started_ns: int) -> None:
        """Publish one inbound's results inside its CONSUMER span, which began with the batch."""
        if isinstance(result, MessageError):
            await self.dead_letters.send(self.topic, inbound.partition, inbound.offset, inbound.key, inbound.raw_value, result)
            return
        span = tracer.start_span(
            f"{self.topic} process", context=context, kind=trace.SpanKind.CONSUMER, start_time=started_ns,
            attributes={
                "messaging.system": "kafka", "messaging.operation.type": "process",
                "messaging.destination.name": self.topic, "messaging.kafka.offset": inbound.offset,
                "messaging.destination.partition.id": str(inbound.partition), "cipherstream.service": self.service,
            },
        )
        span_context = trace.set_span_in_context(span)
        for outbound in result:
            await self.publisher.send(outbound, span_context)
        span.end()

    async def _handle_with_retry(self, inbounds: list[Inbound[M]]) -> list[HandlerResult]:
        for attempt, backoff_s in enumerate((*RETRY_BACKOFF_S, None)):
            try:
                return await self._handle_isolating_poison(inbounds)
            except TRANSIENT_ERRORS as error:
                if backoff_s is None:
                    raise
                log.warning("transient failure, retrying batch",
                            extra=facts(topic=self.topic, attempt=attempt + 1, error=type(error).__name__))
                await asyncio.sleep(backoff_s)
        raise AssertionError("unreachable")

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


def attach_stage(app: faust.App, settings: Settings, stage: Stage[Any]) -> None:
    """Register the stage as a faust agent reading its topic in batches."""
    source = app.topic(settings.topic(stage.topic), value_type=bytes, value_serializer="raw", key_serializer="raw")

    async def agent(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(settings.batch_max_events, within=settings.batch_window_s):
            await stage.process(events)

    agent.__name__ = f"{stage.service}_{stage.topic.replace('.', '_')}"
    app.agent(source, name=agent.__name__)(agent)


def avro_decoder(codec: AvroCodec, message_type: type[M]) -> Decoder[M]:
    def decode(value: bytes | None) -> M:
        return codec.decode(value, message_type)

    return decode
