"""The bank-only half of the bootstrap: each product's online model trained from the bank's history
before scoring serves it, so a new deployment does not start every product at zero weights.

For each product the history's contacts are replayed, oldest first, through the same
`ProductModel.learn` scoring runs on every response (so the model registered is exactly the model
served), except the latest HOLDOUT_FRACTION of them: the model is judged on those (out of time,
as it will be in service), and its holdout AUC is recorded with the version. A product whose
training rows hold fewer than MIN_ROWS_PER_CLASS of either class gets no version: scoring names
it at start and serves it by the fallback (services/scoring/live_models.py).

The history comes from a campaign-response export (services/models/history.py) or from a replay
of the `responses` topic joined with the feature vectors scoring stored when it scored each event
(`replay_responses`).
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.core.avro import AvroCodec, SchemaStore
from services.core.clients import idempotence_available, partitions_of
from services.core.config import Settings
from services.core.errors import SchemaError, UnreachableError
from services.core.logs import facts
from services.models.bank_features import FEATURE_NAMES, PRODUCTS
from services.models.history import HistoryRow, split_by_time
from services.models.ranking import roc_auc
from services.models.registry import DataFingerprint, ModelRegistry, ModelVersion
from services.protocol.stream_messages import OfferResponse
from services.scoring.learner import NEGATIVE_OUTCOMES, POSITIVE_OUTCOMES
from services.scoring.live_models import model_name
from services.scoring.model import MIN_ROWS_PER_CLASS, ProductModel, enough_history
from services.scoring.state import ScoringState
from services.scoring.topics import RESPONSES

log = logging.getLogger(__name__)
HOLDOUT_FRACTION = 0.2
ALGORITHM = "river.LogisticRegression(online SGD), trained from history"


@dataclass(frozen=True)
class BankModelReport:
    """What the bootstrap did for one product: a registered version, or why the fallback serves it."""

    product: str
    rows: int
    positives: int
    holdout_rows: int
    holdout_auc: float | None  # None: no version, or a holdout of one class only
    version: ModelVersion | None
    model: ProductModel | None
    fallback_reason: str | None  # set exactly when version is None

    @property
    def trained(self) -> bool:
        return self.version is not None


def train_product(registry: ModelRegistry, product: str, rows: Sequence[HistoryRow], *, source: str,
                  holdout_fraction: float = HOLDOUT_FRACTION, operator: str = "bootstrap-job") -> BankModelReport:
    """Train, judge and register one product's model from its history rows (any order)."""
    started_at = dt.datetime.now(dt.UTC)
    train, holdout = split_by_time(rows, holdout_fraction)
    positives = sum(row.label for row in train)
    if not enough_history(positives, len(train) - positives):
        reason = (f"too little history: {len(train)} training rows, {positives} converted "
                  f"(at least {MIN_ROWS_PER_CLASS} of each outcome are needed)")
        log.warning("no model trained; scored by the fallback", extra=facts(product=product, reason=reason))
        return BankModelReport(product, len(rows), sum(row.label for row in rows), len(holdout), None, None, None, reason)
    model = ProductModel(product)
    fingerprint = DataFingerprint()
    for row in train:
        model.learn(row.features, bool(row.label))
        fingerprint.update(row.features.tolist(), bool(row.label), row.at_ms)
    holdout_auc = None
    if holdout:
        propensities, _ = model.predict_batch(np.vstack([row.features for row in holdout]))
        holdout_auc = roc_auc(np.array([row.label for row in holdout]), propensities)
    previous = registry.latest(model_name(product))
    version = registry.register(
        model_name=model_name(product), algorithm=ALGORITHM,
        parameters={"learning_rate": model.learning_rate, "l2": model.l2, "scaler": "StandardScaler",
                    "history": source, "holdout_fraction": holdout_fraction, "order": "oldest contact first, one pass"},
        feature_names=list(FEATURE_NAMES), rows_learned=model.rows_learned, iterations=model.rows_learned,
        fingerprint=fingerprint, operator=operator, started_at=started_at,
        metrics={"auc_holdout": holdout_auc, "holdout_rows": len(holdout),
                 "holdout_positives": sum(row.label for row in holdout), "positives_learned": positives,
                 "conversion_rate": positives / len(train), "auc_prequential": model.auc.get()},
        checkpoint=model.to_bytes(), parent_service_number=previous[0].service_number if previous else None,
    )
    log.info("model trained from history", extra=facts(product=product, service_number=version.service_number,
                                                       rows=len(train), positives=positives, auc_holdout=holdout_auc))
    return BankModelReport(product, len(rows), sum(row.label for row in rows), len(holdout), holdout_auc, version,
                           model, None)


def train_bank_models(registry: ModelRegistry, history: Sequence[HistoryRow], *, source: str,
                      products: tuple[str, ...] = PRODUCTS, holdout_fraction: float = HOLDOUT_FRACTION,
                      operator: str = "bootstrap-job") -> list[BankModelReport]:
    """`train_product` for every product, each from its own rows of the history."""
    return [train_product(registry, product, [row for row in history if row.product == product], source=source,
                          holdout_fraction=holdout_fraction, operator=operator) for product in products]


@dataclass(frozen=True)
class Replayed:
    rows: list[HistoryRow]
    responses: int  # terminal responses of a modelled product read, each response id once
    without_features: int  # their scored features had expired (FEATURE_TTL_S) or were never stored: not learned
    skipped: int  # unreadable (scoring dead-lettered them) or for a product the bank does not model


async def replay_responses(settings: Settings, redis: aioredis.Redis, timeout_s: float = 120.0) -> Replayed:
    """The history in the `responses` topic, from its beginning to its end as of now: each terminal
    response (converted: 1; ignored, opted out: 0) with the feature vector scoring stored when it
    scored the response's event (`features:<customer>`, services/scoring/state.py)."""
    codec = AvroCodec(SchemaStore(settings.schema_dir))
    terminal: dict[str, OfferResponse] = {}
    skipped = 0
    for value in await _read_to_end(settings.kafka_bootstrap_servers, settings.topic(RESPONSES), timeout_s):
        try:
            response = codec.decode(value, OfferResponse)
        except SchemaError:
            skipped += 1
            continue
        if response.outcome not in POSITIVE_OUTCOMES | NEGATIVE_OUTCOMES:
            continue  # delivered, opened, clicked: not an outcome to learn
        if response.product not in PRODUCTS:
            skipped += 1
            continue
        terminal[response.response_id] = response
    responses = list(terminal.values())
    state = ScoringState(redis, settings.redis_key_prefix)
    pipeline = redis.pipeline(transaction=False)
    for response in responses:
        pipeline.hget(state.key("features", response.customer_id), response.event_id)
    stored = await pipeline.execute() if responses else []
    rows = [HistoryRow(response.customer_id, response.product, np.frombuffer(features, dtype=np.float64).copy(),
                       int(response.outcome in POSITIVE_OUTCOMES), response.occurred_at_ms)
            for response, features in zip(responses, stored, strict=True)
            if features is not None and len(features) == 8 * len(FEATURE_NAMES)]
    if skipped or len(rows) < len(responses):
        log.warning("responses not replayed", extra=facts(without_features=len(responses) - len(rows), skipped=skipped))
    return Replayed(rows, len(responses), len(responses) - len(rows), skipped)


async def _read_to_end(bootstrap_servers: str, topic: str, timeout_s: float) -> list[bytes]:
    """Every committed value of `topic`, up to the end offsets it had when the read began."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None,
                                isolation_level="read_committed" if idempotence_available() else "read_uncommitted")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, partition) for partition in await partitions_of(consumer, topic)]
        if not partitions:
            raise UnreachableError(f"topic {topic} does not exist on {bootstrap_servers}")
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while [partition for partition, end in ends.items() if await consumer.position(partition) < end]:
            if time.monotonic() > deadline:
                raise UnreachableError(f"{topic} was not read to its end within {timeout_s:.0f} s")
            for records in (await consumer.getmany(timeout_ms=200, max_records=5000)).values():
                values += [record.value for record in records
                           if record.value is not None and record.offset < ends[TopicPartition(topic, record.partition)]]
        return values
    finally:
        await consumer.stop()
