"""The scorer against a real Redis and SQLite registry."""
from __future__ import annotations

import redis.asyncio as aioredis

from services.core.config import Settings
from services.core.kafka import Inbound
from services.models.bank_features import PRODUCTS
from services.models.registry import ModelRegistry
from services.protocol.stream_messages import CustomerEvent, CustomerProfile, CustomerScores
from services.scoring.scorer import Scorer


def _inbound(message: object, key: bytes = b"C1") -> Inbound:
    return Inbound(message, key, "t", 0, 0, 0, None)


PROFILE = CustomerProfile("C1", 35, 60, 2_500_000, 9_000_000, ("debit_card",), "affluent", "push", "Asia/Shanghai", True, 0)


def _event(event_id: str, customer_id: str = "C1") -> CustomerEvent:
    return CustomerEvent(event_id, customer_id, "salary_credit", 2_500_000, "CNY", "CN", 0, 0, "bank.events.raw", 0, 0)


async def _scorer(settings: Settings) -> tuple[Scorer, aioredis.Redis, ModelRegistry]:
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    registry = ModelRegistry(settings.database_url.get_secret_value())
    return Scorer.start(redis, settings.redis_key_prefix, registry, model_refresh_s=0.01), redis, registry


async def test_every_event_gets_one_score_per_product_with_reason_codes(settings: Settings) -> None:
    scorer, redis, _ = await _scorer(settings)
    await scorer.store_profiles([_inbound(PROFILE)])
    [[outbound]] = await scorer.score([_inbound(_event("e1"))])
    scores: CustomerScores = outbound.message
    assert outbound.topic == "scores" and scores.segment == "affluent" and scores.consent_marketing
    assert [score.product for score in scores.scores] == list(PRODUCTS)
    assert all(len(score.reasons) == 3 and score.service_number.startswith("CS-") for score in scores.scores)
    await redis.aclose()


async def test_unknown_customer_is_scored_without_consent(settings: Settings) -> None:
    scorer, redis, _ = await _scorer(settings)
    [[outbound]] = await scorer.score([_inbound(_event("e1", "C404"))])
    assert outbound.message.segment == "unknown" and not outbound.message.consent_marketing
    await redis.aclose()


async def test_tombstone_erases_the_customer_from_scoring_state(settings: Settings) -> None:
    scorer, redis, _ = await _scorer(settings)
    await scorer.store_profiles([_inbound(PROFILE)])
    await scorer.score([_inbound(_event("e1"))])
    assert await redis.exists(f"{settings.redis_key_prefix}profile:C1", f"{settings.redis_key_prefix}features:C1") == 2
    await scorer.store_profiles([_inbound(None, key=b"C1")])
    assert await redis.exists(f"{settings.redis_key_prefix}profile:C1", f"{settings.redis_key_prefix}features:C1") == 0
    await redis.aclose()
