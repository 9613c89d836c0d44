"""Scoring logic: keep profiles, score events for every product, learn from responses.

State lives in Redis so any scoring worker can serve any customer and an erased customer can be
removed from one place: `profile:<customer>` (the current profile) and `features:<customer>`
(a hash of event id -> the feature vector that was scored, kept so a later response can be
learned against exactly what was scored; expires after `feature_ttl_s`).

An aligned customer (`join:<customer>`, set by the exchange service) whose partner partial score
has arrived (`partial:<join id>`) is scored by the product's federated model when one is
deployed (services/models/federated.py); everyone else by the bank-only online model.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from services.core import metrics
from services.core.kafka import HandlerResult, Inbound, Outbound, now_ms
from services.core.logs import facts
from services.protocol.bank_keys import BankKeys, parse_partial_score
from services.protocol.stream_messages import (
    CustomerEvent,
    CustomerProfile,
    CustomerScores,
    OfferResponse,
    ProductScore,
    ReasonCode,
)
from services.models.registry import DataFingerprint, ModelRegistry, ModelVersion
from services.models.bank_features import FEATURE_NAMES, PRODUCTS, feature_matrix
from services.models.federated import REASON_NAMES, LiveFederated, load_federated
from services.scoring.model import ProductModel, top_reasons_batch

log = logging.getLogger(__name__)
SCORES_TOPIC = "scores"
POSITIVE_OUTCOMES = frozenset({"converted"})
NEGATIVE_OUTCOMES = frozenset({"ignored", "opted_out"})
FEATURE_TTL_S = 14 * 24 * 3600
LEARNED_MARK_TTL_S = 30 * 24 * 3600
UNKNOWN_SEGMENT = "unknown"
FEDERATED_REFRESH_S = 30.0
STORE_FEATURES_LUA = """
local ttl = ARGV[1]
for i = 1, #KEYS do
  redis.call('HSET', KEYS[i], ARGV[2 * i], ARGV[2 * i + 1])
  redis.call('EXPIRE', KEYS[i], ttl)
end
return #KEYS
"""


def model_name(product: str) -> str:
    return f"propensity.{product}"


def unknown_profile(customer_id: str) -> CustomerProfile:
    """What we score with before the customer's profile arrives: no consent, so no offer is made."""
    return CustomerProfile(customer_id, 0, 0, 0, 0, (), UNKNOWN_SEGMENT, "sms", "UTC", False, 0)


@dataclass
class LiveModel:
    """A product model being served, with the registry version its scores carry."""

    model: ProductModel
    version: ModelVersion
    fingerprint: DataFingerprint
    started_at: dt.datetime
    learned_since_checkpoint: int = 0


@dataclass
class Scorer:
    redis: aioredis.Redis
    key_prefix: str
    registry: ModelRegistry
    live: dict[str, LiveModel] = field(default_factory=dict)
    checkpoint_every_rows: int = 200
    operator: str = "scoring-service"
    federated: dict[str, LiveFederated] = field(default_factory=dict)
    federated_loaded_at: float = 0.0
    model_refresh_s: float = FEDERATED_REFRESH_S
    _store_features_script: Any = None

    @property
    def keys(self) -> BankKeys:
        return BankKeys(self.key_prefix)

    @classmethod
    def start(cls, redis: aioredis.Redis, key_prefix: str, registry: ModelRegistry, products: tuple[str, ...] = PRODUCTS,
              checkpoint_every_rows: int = 200, model_refresh_s: float = FEDERATED_REFRESH_S) -> Scorer:
        """Restore each product's latest checkpoint (or start fresh) and register this run's version."""
        scorer = cls(redis, key_prefix, registry, checkpoint_every_rows=checkpoint_every_rows,
                     model_refresh_s=model_refresh_s)
        for product in products:
            latest = registry.latest(model_name(product))
            model = ProductModel.from_bytes(latest[1]) if latest and latest[1] else ProductModel(product)
            previous = latest[0] if latest else None
            fingerprint = DataFingerprint(previous.data_fingerprint if previous else "")
            scorer.live[product] = LiveModel(model, previous, fingerprint, dt.datetime.now(dt.timezone.utc))  # type: ignore[arg-type]
            scorer._checkpoint(product)
            registry.record_deployment(scorer.live[product].version.service_number, operator=scorer.operator,
                                       target=socket.gethostname())
        scorer.federated = load_federated(registry, products)
        scorer.federated_loaded_at = time.monotonic()
        return scorer

    @property
    def _store_features(self):  # type: ignore[no-untyped-def]
        """HSET KEYS[i] event features + EXPIRE KEYS[i] ttl for a whole batch, server-side."""
        if self._store_features_script is None:
            self._store_features_script = self.redis.register_script(STORE_FEATURES_LUA)
        return self._store_features_script

    async def _refresh_federated(self) -> None:
        """Pick up newly trained federated versions without a restart."""
        if time.monotonic() - self.federated_loaded_at >= self.model_refresh_s:
            self.federated_loaded_at = time.monotonic()
            self.federated = await asyncio.to_thread(load_federated, self.registry, tuple(self.live))

    async def _partial_scores(self, customer_ids: list[str], join_ids: list[bytes | None]) -> list[dict[str, str]]:
        """The partner's partial scores per customer (model -> "version|score"), {} if none."""
        aligned = [index for index, join_id in enumerate(join_ids) if join_id]
        found: list[dict[str, str]] = [{} for _ in customer_ids]
        if aligned and self.federated:
            pipeline = self.redis.pipeline(transaction=False)
            for index in aligned:
                pipeline.hgetall(self.keys.partial(join_ids[index].decode()))  # type: ignore[union-attr]
            for index, stored in zip(aligned, await pipeline.execute()):
                found[index] = {model.decode(): value.decode() for model, value in stored.items()}
        return found

    def _checkpoint(self, product: str) -> None:
        live = self.live[product]
        model = live.model
        live.version = self.registry.register(
            model_name=model_name(product), algorithm="river.LogisticRegression(online SGD)",
            parameters={"learning_rate": model.learning_rate, "l2": model.l2, "scaler": "StandardScaler"},
            feature_names=list(FEATURE_NAMES), rows_learned=model.rows_learned, iterations=model.rows_learned,
            fingerprint=live.fingerprint, operator=self.operator, started_at=live.started_at,
            metrics={"auc_prequential": model.auc.get(), "drifts_detected": model.drifts_detected},
            checkpoint=model.to_bytes(), parent_service_number=live.version.service_number if live.version else None,
        )
        live.learned_since_checkpoint = 0
        live.started_at = dt.datetime.now(dt.timezone.utc)

    def _key(self, kind: str, customer_id: str) -> str:
        return f"{self.key_prefix}{kind}:{customer_id}"

    async def store_profiles(self, batch: list[Inbound[CustomerProfile | None]]) -> list[HandlerResult]:
        """Keep the latest profile per customer; a tombstone erases the customer's scoring state."""
        pipeline = self.redis.pipeline(transaction=False)
        for inbound in batch:
            if inbound.message is None:
                customer_id = (inbound.key or b"").decode()
                pipeline.delete(self._key("profile", customer_id), self._key("features", customer_id))
            else:
                pipeline.set(self._key("profile", inbound.message.customer_id), json.dumps(asdict(inbound.message)))
        await pipeline.execute()
        return [[] for _ in batch]

    async def score(self, batch: list[Inbound[CustomerEvent]]) -> list[HandlerResult]:
        """One CustomerScores per event: a propensity and reason codes for every product."""
        await self._refresh_federated()
        events = [inbound.message for inbound in batch]
        customer_ids = [event.customer_id for event in events]
        stored = await self.redis.mget([self._key("profile", customer) for customer in customer_ids]
                                       + [self.keys.join(customer) for customer in customer_ids])
        profiles = [_profile_from_json(raw) if raw else unknown_profile(customer)
                    for raw, customer in zip(stored, customer_ids)]
        partials = await self._partial_scores(customer_ids, stored[len(events):])
        features = feature_matrix(events, profiles)
        per_product = []
        for product, live in self.live.items():
            propensities, contributions = live.model.predict_batch(features)
            version = live.version
            labels = [f"{version.model_name}@v{version.version}"] * len(events)
            numbers = [version.service_number] * len(events)
            reasons = top_reasons_batch(contributions)
            partner = [False] * len(events)
            self._score_federated(product, features, partials, propensities, labels, numbers, reasons, partner)
            per_product.append((product, labels, numbers, propensities.tolist(), reasons, partner))
        scored_at_ms = now_ms()
        results: list[HandlerResult] = []
        feature_keys: list[str] = []
        feature_fields: list[bytes | str | int] = [FEATURE_TTL_S]
        for row, (event, profile) in enumerate(zip(events, profiles)):
            product_scores = tuple([
                ProductScore(product, propensities[row], labels[row], numbers[row], partner[row], reasons[row])
                for product, labels, numbers, propensities, reasons, partner in per_product
            ])
            scores = CustomerScores(
                event_id=event.event_id, customer_id=event.customer_id, event_type=event.event_type,
                received_at_ms=event.received_at_ms, scored_at_ms=scored_at_ms, segment=profile.segment,
                preferred_channel=profile.preferred_channel, timezone=profile.timezone, age=profile.age,
                products_held=profile.products_held, consent_marketing=profile.consent_marketing, scores=product_scores,
            )
            results.append([Outbound(SCORES_TOPIC, event.customer_id, scores)])
            if profile.segment != UNKNOWN_SEGMENT:
                feature_keys.append(self._key("features", event.customer_id))
                feature_fields += [event.event_id, features[row].tobytes()]
        if feature_keys:
            # One command for the batch: per-event HSET + EXPIRE cost a third of the stage's time.
            await self._store_features(keys=feature_keys, args=feature_fields)
        return results

    def _score_federated(self, product: str, features: np.ndarray, partials: list[dict[str, str]],
                         propensities: np.ndarray, labels: list[str], numbers: list[str],
                         reasons: list[tuple[ReasonCode, ...]], partner: list[bool]) -> None:
        """Rescore, in place, the rows whose partner partial score matches the deployed federated half."""
        live = self.federated.get(product)
        if live is None:
            return
        rows, scores = [], []
        for row, per_model in enumerate(partials):
            stored = per_model.get(live.version.model_name)
            if stored:
                version, score = parse_partial_score(stored)
                if version == live.half.partner_version:
                    rows.append(row)
                    scores.append(score)
        if not rows:
            return
        contributions = live.half.contributions(features[rows], np.asarray(scores))
        propensities[rows] = live.half.propensities(contributions)
        for row, row_reasons in zip(rows, top_reasons_batch(contributions, names=REASON_NAMES)):
            labels[row], numbers[row], reasons[row], partner[row] = live.label, live.version.service_number, row_reasons, True

    async def learn(self, batch: list[Inbound[OfferResponse]]) -> list[HandlerResult]:
        """Learn from terminal responses (converted: 1; ignored, opted out: 0), each exactly once."""
        terminal = [inbound.message for inbound in batch
                    if inbound.message.outcome in POSITIVE_OUTCOMES | NEGATIVE_OUTCOMES
                    and inbound.message.product in self.live]
        if terminal:
            pipeline = self.redis.pipeline(transaction=False)
            for response in terminal:
                pipeline.set(f"{self.key_prefix}learned:{response.response_id}", 1, nx=True, ex=LEARNED_MARK_TTL_S)
                pipeline.hget(self._key("features", response.customer_id), response.event_id)
            replies = await pipeline.execute()
            for index, response in enumerate(terminal):
                first_time, stored_features = replies[2 * index], replies[2 * index + 1]
                if not first_time:
                    continue
                if stored_features is None:
                    log.info("response without stored features", extra=facts(event_id=response.event_id))
                    continue
                self._learn_one(response, np.frombuffer(stored_features, dtype=np.float64))
            await self._checkpoint_due()
        return [[] for _ in batch]

    def _learn_one(self, response: OfferResponse, features: np.ndarray) -> None:
        live = self.live[response.product]
        converted = response.outcome in POSITIVE_OUTCOMES
        live.model.learn(features, converted)
        live.fingerprint.update(features.tolist(), converted, response.occurred_at_ms)
        live.learned_since_checkpoint += 1
        metrics.MODEL_AUC.labels(response.product).set(live.model.auc.get())
        metrics.MODEL_KS.labels(response.product).set(live.model.ks())

    async def _checkpoint_due(self) -> None:
        for product, live in self.live.items():
            if live.learned_since_checkpoint >= self.checkpoint_every_rows:
                started = time.perf_counter()
                await asyncio.to_thread(self._checkpoint, product)
                log.info("model checkpoint", extra=facts(product=product, service_number=live.version.service_number,
                                                          rows=live.model.rows_learned,
                                                          seconds=round(time.perf_counter() - started, 3)))


def _profile_from_json(raw: bytes) -> CustomerProfile:
    values = json.loads(raw)
    values["products_held"] = tuple(values["products_held"])
    return CustomerProfile(**values)
