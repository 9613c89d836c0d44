"""The scorer against a real Redis and SQLite registry."""
from __future__ import annotations

import redis.asyncio as aioredis

from demo.generator.history import campaign_contacts
from demo.generator.population import make_population
from services.core.config import Settings
from services.core.kafka import Inbound
from services.models.bank_features import PRODUCTS
from services.models.history import history_row
from services.models.registry import ModelRegistry
from services.protocol.stream_messages import CustomerEvent, CustomerProfile, CustomerScores
from services.scoring.bootstrap import train_bank_models
from services.scoring.live_models import FALLBACK_REASONS
from services.scoring.scorer import Scorer


def _inbound(message: object, key: bytes = b"C1") -> Inbound:
    return Inbound(message, key, "t", 0, 0, 0, None)


PROFILE = CustomerProfile("C1", 35, 60, 2_500_000, 9_000_000, ("debit_card",), "affluent", "push", "Asia/Shanghai", True, 0)


def _event(event_id: str, customer_id: str = "C1") -> CustomerEvent:
    return CustomerEvent(event_id, customer_id, "salary_credit", 2_500_000, "CNY", "CN", 0, 0, "bank.events.raw", 0, 0)


async def _scorer(settings: Settings, trained: bool = False) -> tuple[Scorer, aioredis.Redis, ModelRegistry]:
    """A scorer on a fresh registry; `trained`: after the bootstrap trained every product from a generated history."""
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    registry = ModelRegistry(settings.database_url.get_secret_value())
    if trained:
        history = [history_row(contact) for contact in campaign_contacts(make_population(400, seed=3))]
        assert all(report.trained for report in train_bank_models(registry, history, source="generated"))
    return Scorer.start(redis, settings.redis_key_prefix, registry, model_refresh_s=0.01), redis, registry


async def test_every_event_gets_one_score_per_product_with_reason_codes(settings: Settings) -> None:
    scorer, redis, _ = await _scorer(settings, trained=True)
    await scorer.store_profiles([_inbound(PROFILE)])
    [[outbound]] = await scorer.score([_inbound(_event("e1"))])
    scores: CustomerScores = outbound.message
    assert outbound.topic == "scores" and scores.segment == "affluent" and scores.consent_marketing
    assert [score.product for score in scores.scores] == list(PRODUCTS)
    assert all(len(score.reasons) == 3 and score.service_number.startswith("CS-") for score in scores.scores)
    await redis.aclose()


async def test_without_trained_models_every_score_says_it_is_the_fallback(settings: Settings) -> None:
    scorer, redis, _ = await _scorer(settings)
    await scorer.store_profiles([_inbound(PROFILE)])
    [[outbound]] = await scorer.score([_inbound(_event("e1"))])
    assert all(score.reasons == FALLBACK_REASONS and ".FALLBACK-v" in score.service_number
               and score.model_version.endswith(".fallback@v1") for score in outbound.message.scores)
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
