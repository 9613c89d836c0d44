"""Scoring's learner: the models learn from terminal responses (converted: 1; ignored, opted out: 0),
each response exactly once, through crashes and replays.

One replica learns (it holds the lease `lease.scoring`, services/core/lease.py); every replica
serves what the learner registers (live_models.py). The learner reads `responses` with a consumer
of its own, not the stage group: its position is saved with its models, in one registry
transaction (learned_models.py), and on start it restores that checkpoint and reads on from
exactly those offsets, so a crash re-learns precisely what the checkpoint had not covered. Two
learners at once (a lease lost during a pause) cannot fork a model: a checkpoint only registers
over the versions and the position it started from, and the one refused restores and reads on.

Per record, in order: a terminal response for a product, whose scored features are still stored,
and which is the first record of its response id (a channel sending it again is learned once:
state.py's `learned:` marks, which hold the first record's position, so a replayed record is not
mistaken for a resend), teaches the product's bank-only model; and, for an aligned customer of a
product with a federated model, the federated bank half (online_federated.py), with the partial
score of the partner half the last window left. When that fills a window of responses, the window
is saved in a checkpoint first and then sent to the partner (online_windows.py); learning goes on
once the partner has applied it. A malformed response goes to dlq.responses (at least once: a
replay from a checkpoint sends its dead letter again).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from sqlalchemy.exc import DatabaseError

from services.core import metrics
from services.core.avro import AvroCodec
from services.core.clients import partitions_of
from services.core.config import Settings
from services.core.errors import MessageError, UnreachableError, ValidationError
from services.core.kafka import TRANSIENT_ERRORS, DeadLetters, Publisher, avro_decoder, stage_group_id
from services.core.logs import facts
from services.models.bank_features import PRODUCTS
from services.models.federated import federated_model_name
from services.models.online_federated import OnlineHalf
from services.models.registry import ModelRegistry, StaleVersionError
from services.protocol.bank_keys import parse_partial_score
from services.protocol.partner_versions import same_lineage, window_of
from services.protocol.stream_messages import OfferResponse
from services.scoring.learned_models import LearnedModels, OnlineSettings
from services.scoring.online_windows import OnlineWindows
from services.scoring.state import LearningKey, ScoringState
from services.scoring.topics import RESPONSES

log = logging.getLogger(__name__)
SERVICE = "scoring"
POSITIVE_OUTCOMES = frozenset({"converted"})
NEGATIVE_OUTCOMES = frozenset({"ignored", "opted_out"})
ONLINE_L2 = 0.0
FETCH_TIMEOUT_MS = 500
MAX_RECORDS_PER_FETCH = 200
# The learner shares its process with the scoring stage: it lets the stage run between records.
YIELD_EVERY_RECORDS = 16
# After a window the partner pushes partial scores of its new half; a response right behind the
# window waits this long for its customer's new score (the residual must use the half the window
# left, so that a replay computes the same residual), then goes on with the older one.
PARTIAL_WAIT_S = 30.0
PARTIAL_POLL_S = 0.05
RETRY_BACKOFF_FIRST_S = 0.5
RETRY_BACKOFF_MAX_S = 10.0
# Failures after which the learner restores its checkpoint and reads on from there: a part away,
# another writer first, a window the partner did not answer or answered wrongly.
RESTORE_ON: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, DatabaseError, StaleVersionError, ValidationError)


def learner_id(settings: Settings) -> str:
    """The learner's name in the registry's positions: one per `responses` topic."""
    return f"{SERVICE}:{settings.topic(RESPONSES)}"


@dataclass
class Learner:
    settings: Settings
    codec: AvroCodec
    redis: aioredis.Redis
    registry: ModelRegistry
    products: tuple[str, ...] = PRODUCTS

    def __post_init__(self) -> None:
        self.state = ScoringState(self.redis, self.settings.redis_key_prefix)
        self.decode = avro_decoder(self.codec, OfferResponse)
        self.online = OnlineSettings(self.settings.online_learning_rate, ONLINE_L2, self.settings.online_window_rows)
        self.topic = self.settings.topic(RESPONSES)
        self.models: LearnedModels | None = None
        self.last_checkpoint = time.monotonic()

    async def run(self) -> None:
        """Learn until cancelled (the lease lost, the service stopping)."""
        settings = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None, enable_auto_commit=False,
            client_id=f"cipherstream-{SERVICE}-learner", auto_offset_reset="earliest",
            fetch_max_wait_ms=max(settings.fetch_max_wait_ms, 100),
            isolation_level="read_committed" if settings.exactly_once else "read_uncommitted")
        publisher = Publisher(settings, self.codec, SERVICE)  # dead letters only, outside any transaction
        dead_letters = DeadLetters(publisher, SERVICE)
        windows = OnlineWindows(settings, self.codec, settings.online_reply_timeout_s)
        await consumer.start()
        await publisher.start()
        metrics.LEARNER_ACTIVE.labels(SERVICE).set(1)
        try:
            await self._learn_until_cancelled(consumer, publisher, dead_letters, windows)
        finally:
            metrics.LEARNER_ACTIVE.labels(SERVICE).set(0)
            await windows.stop()
            await publisher.stop()
            await consumer.stop()

    async def _learn_until_cancelled(self, consumer: AIOKafkaConsumer, publisher: Publisher, dead_letters: DeadLetters,
                                     windows: OnlineWindows) -> None:
        backoff_s = RETRY_BACKOFF_FIRST_S
        restore = True
        while True:
            try:
                if restore:
                    models = await self._restore(consumer)
                    await self._finish_sealed_windows(models, windows)
                    restore = False
                batches = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS, max_records=MAX_RECORDS_PER_FETCH)
                records = [record for partition in sorted(batches, key=lambda tp: tp.partition)
                           for record in batches[partition]]
                if records:
                    await self._learn(models, records, publisher, dead_letters, windows)
                    self._report_lag(consumer, models)
                await self._checkpoint_if_due(models)
                backoff_s = RETRY_BACKOFF_FIRST_S
            except RESTORE_ON as error:
                # What the models learned since the checkpoint is dropped; reading on from its offsets
                # learns it again, once.
                log.warning("learner restores its checkpoint", extra=facts(error=type(error).__name__,
                                                                            detail=str(error)[:300], backoff_s=backoff_s))
                metrics.LEARNER_RESTORES.labels(type(error).__name__).inc()
                restore = True
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, RETRY_BACKOFF_MAX_S)

    async def _restore(self, consumer: AIOKafkaConsumer) -> LearnedModels:
        models = await asyncio.to_thread(LearnedModels.restore, self.registry, learner_id(self.settings), self.products,
                                         self.online)
        partitions = await partitions_of(consumer, self.topic)
        if not partitions:
            raise UnreachableError(f"topic {self.topic} does not exist")
        assigned = [TopicPartition(self.topic, partition) for partition in sorted(partitions)]
        consumer.assign(assigned)
        if models.generation == 0:
            models.offsets = await self._where_the_stage_left_off(assigned)
        for tp in assigned:
            if tp.partition in models.offsets:
                consumer.seek(tp, models.offsets[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)
        self.models, self.last_checkpoint = models, time.monotonic()
        log.info("learner restored", extra=facts(generation=models.generation, offsets=models.offsets,
                                                 federated=sorted(models.online)))
        return models

    async def _where_the_stage_left_off(self, partitions: list[TopicPartition]) -> dict[int, int]:
        """A learner's first start: before it, scoring learned in its `responses` stage, whose group
        committed how far it got. The models already hold that (less what a crash lost), so learning
        carries on from there; a new deployment has no such commits and starts from the beginning."""
        group = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap_servers, enable_auto_commit=False,
                                 group_id=stage_group_id(self.settings, SERVICE))  # never joins: reads commits only
        await group.start()
        try:
            committed = {tp.partition: await group.committed(tp) for tp in partitions}
        finally:
            await group.stop()
        found = {partition: offset for partition, offset in committed.items() if offset is not None}
        if found:
            log.info("learner starts where the responses stage left off", extra=facts(offsets=found))
        return found

    async def _finish_sealed_windows(self, models: LearnedModels, windows: OnlineWindows) -> None:
        """A checkpoint can hold a window sealed and not yet confirmed: send it (again) first."""
        for product, window in models.sealed_windows():
            version = await windows.apply(federated_model_name(product), models.online[product], window)
            models.confirm_window(product, window.index, version)

    async def _learn(self, models: LearnedModels, records: list[ConsumerRecord[bytes, bytes]], publisher: Publisher,
                     dead_letters: DeadLetters, windows: OnlineWindows) -> None:
        metrics.EVENTS_IN.labels(SERVICE, RESPONSES).inc(len(records))
        decoded: list[OfferResponse | None] = []
        for record in records:
            try:
                decoded.append(self.decode(record.value))
            except MessageError as error:
                await dead_letters.send(RESPONSES, record.partition, record.offset, record.key, record.value, error)
                decoded.append(None)
        if None in decoded:
            await (await publisher.ship()).delivered()
        terminal = [(index, response) for index, response in enumerate(decoded)
                    if response is not None and self._terminal(response)]
        keys = [LearningKey(response.response_id, records[index].partition, records[index].offset, response.customer_id,
                            response.event_id) for index, response in terminal]
        inputs = dict(zip([index for index, _ in terminal], await self.state.learning_inputs(keys))) if keys else {}
        # Federated rows: (record index, join id, model name); their partial scores in one round trip.
        federated = [(index, str(inputs[index].join_id), federated_model_name(response.product))
                     for index, response in terminal if inputs[index].join_id and response.product in models.online]
        stored_partials = dict(zip([index for index, _, _ in federated], await self.state.partial_scores_of(
            [join_id for _, join_id, _ in federated], [name for _, _, name in federated]))) if federated else {}
        for index, (record, response) in enumerate(zip(records, decoded)):
            models.offsets[record.partition] = record.offset + 1
            if index % YIELD_EVERY_RECORDS == YIELD_EVERY_RECORDS - 1:
                await asyncio.sleep(0)
            found = inputs.get(index)
            if response is None or found is None:
                continue
            if not found.first_record:
                metrics.RESPONSES_NOT_LEARNED.labels("duplicate_response").inc()
                continue
            if found.features is None:
                metrics.RESPONSES_NOT_LEARNED.labels("no_scored_features").inc()
                log.info("response without stored features", extra=facts(event_id=response.event_id))
                continue
            converted = response.outcome in POSITIVE_OUTCOMES
            models.learn_bank(response.product, found.features, converted, response.occurred_at_ms)
            half = models.online.get(response.product)
            if half is not None and found.join_id is not None:
                partial = await self._partial_score(half, found.join_id, response.product, stored_partials.get(index))
                window = None if partial is None else models.learn_online(
                    response.product, found.features, partial, converted, found.join_id, response.occurred_at_ms)
                if window is not None:  # saved before it is sent: a crash from here sends it again, never learns it twice
                    await self._checkpoint(models)
                    version = await windows.apply(federated_model_name(response.product), half, window)
                    models.confirm_window(response.product, window.index, version)
            if models.rows_since_checkpoint >= self.settings.learner_checkpoint_rows:
                await self._checkpoint(models)

    def _report_lag(self, consumer: AIOKafkaConsumer, models: LearnedModels) -> None:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None and tp.partition in models.offsets:
                metrics.CONSUMER_LAG.labels(SERVICE, RESPONSES, str(tp.partition)).set(
                    max(0, highwater - models.offsets[tp.partition]))

    def _terminal(self, response: OfferResponse) -> bool:
        return response.outcome in POSITIVE_OUTCOMES | NEGATIVE_OUTCOMES and response.product in self.products

    async def _partial_score(self, half: OnlineHalf, join_id: str, product: str, stored: str | None) -> float | None:
        """The customer's partial score of the partner half the last window left (None: no score of
        this half's lineage, so the federated half does not learn from this row)."""
        deadline = time.monotonic() + PARTIAL_WAIT_S
        while stored is not None:
            version, score = parse_partial_score(stored)
            if not same_lineage(version, half.half.partner_version):
                metrics.RESPONSES_NOT_LEARNED.labels("partial_score_of_another_half").inc()
                return None
            if window_of(version) >= half.applied:
                return score
            if time.monotonic() > deadline:
                log.warning("partner's new partial score did not arrive; learning with the previous one",
                            extra=facts(model=federated_model_name(product), have=version, applied=half.applied))
                return score
            await asyncio.sleep(PARTIAL_POLL_S)
            stored = await self.state.partial_score(join_id, federated_model_name(product))
        metrics.RESPONSES_NOT_LEARNED.labels("no_partial_score").inc()
        return None

    async def _checkpoint_if_due(self, models: LearnedModels) -> None:
        """Every `learner_checkpoint_rows` rows learned (checked per row), and after
        `learner_checkpoint_interval_s` with anything new (checked here, between fetches)."""
        if models.moved and time.monotonic() - self.last_checkpoint >= self.settings.learner_checkpoint_interval_s:
            await self._checkpoint(models)

    async def _checkpoint(self, models: LearnedModels) -> None:
        started = time.perf_counter()
        try:
            registered = await asyncio.to_thread(models.checkpoint, self.registry)
        except StaleVersionError:
            metrics.LEARNER_CHECKPOINTS.labels("refused").inc()
            raise
        metrics.LEARNER_CHECKPOINTS.labels("saved").inc()
        self.last_checkpoint = time.monotonic()
        log.info("learner checkpoint", extra=facts(generation=models.generation, offsets=models.offsets,
                                                   versions=[version.service_number for version in registered],
                                                   seconds=round(time.perf_counter() - started, 3)))
