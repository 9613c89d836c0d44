"""The stage runner: every service's hot path (see the package docstring)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic

import mode
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from opentelemetry import trace
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.core import metrics
from services.core.config import Settings
from services.core.errors import MessageError, UnreachableError
from services.core.kafka.dead_letters import DeadLetters
from services.core.kafka.publisher import BROKER_PROBE_TIMEOUT_S, Publisher, Shipment, cluster_of
from services.core.kafka.records import Decoder, Handler, HandlerResult, Inbound, M
from services.core.kafka.stage_names import stage_group_id
from services.core.logs import facts
from services.core.telemetry import TraceDecision, decide_trace, root_sample_ratio

log = logging.getLogger(__name__)
tracer = trace.get_tracer("cipherstream")

# Errors that mean "a part is down", not "this message is bad": retry the batch, never dead-letter it.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, UnreachableError, KafkaError, ConnectionError, asyncio.TimeoutError,
)
# A batch that failed for a transient reason is replayed after this backoff, doubling up to the cap.
RETRY_BACKOFF_FIRST_S = 0.1
RETRY_BACKOFF_MAX_S = 2.0
BROKER_PROBE_INTERVAL_S = 2.0


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
                except (TimeoutError, KafkaError, OSError):
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
