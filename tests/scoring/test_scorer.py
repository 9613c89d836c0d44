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
from services.protocol.stream_messages import CustomerEvent, CustomerProfile, CustomerScores, OfferResponse
from services.scoring.bootstrap import train_bank_models
from services.scoring.live_models import FALLBACK_REASONS, model_name
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
    return Scorer.start(redis, settings.redis_key_prefix, registry, checkpoint_every_rows=5), redis, registry


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


async def test_conversions_raise_the_propensity_and_a_replayed_response_is_learned_once(settings: Settings) -> None:
    scorer, redis, _ = await _scorer(settings, trained=True)
    await scorer.store_profiles([_inbound(PROFILE)])
    [[before]] = await scorer.score([_inbound(_event("e1"))])
    learned_before = scorer.models.live["wealth_fund"].model.rows_learned
    responses = [OfferResponse(f"r{i}", "o1", "e1", "C1", "camp", "wealth_fund", "push", "converted", i) for i in range(3)]
    await scorer.learn([_inbound(response) for response in responses])
    await scorer.learn([_inbound(response) for response in responses])  # replay: no second learning
    assert scorer.models.live["wealth_fund"].model.rows_learned == learned_before + 3
    [[after]] = await scorer.score([_inbound(_event("e2"))])
    propensity = {score.product: score.propensity for score in after.message.scores}
    previous = {score.product: score.propensity for score in before.message.scores}
    assert propensity["wealth_fund"] > previous["wealth_fund"]
    assert propensity["mortgage"] == previous["mortgage"]
    await redis.aclose()


async def test_non_terminal_responses_teach_nothing(settings: Settings) -> None:
    scorer, redis, _ = await _scorer(settings)
    await scorer.store_profiles([_inbound(PROFILE)])
    await scorer.score([_inbound(_event("e1"))])
    await scorer.learn([_inbound(OfferResponse("r1", "o1", "e1", "C1", "c", "wealth_fund", "push", "opened", 0))])
    assert scorer.models.live["wealth_fund"].model.rows_learned == 0
    await redis.aclose()


async def test_tombstone_erases_the_customer_from_scoring_state(settings: Settings) -> None:
    scorer, redis, _ = await _scorer(settings)
    await scorer.store_profiles([_inbound(PROFILE)])
    await scorer.score([_inbound(_event("e1"))])
    assert await redis.exists(f"{settings.redis_key_prefix}profile:C1", f"{settings.redis_key_prefix}features:C1") == 2
    await scorer.store_profiles([_inbound(None, key=b"C1")])
    assert await redis.exists(f"{settings.redis_key_prefix}profile:C1", f"{settings.redis_key_prefix}features:C1") == 0
    await redis.aclose()


async def test_restart_restores_the_checkpoint_and_continues_the_lineage(settings: Settings) -> None:
    scorer, redis, registry = await _scorer(settings)
    await scorer.store_profiles([_inbound(PROFILE)])
    await scorer.score([_inbound(_event("e1"))])
    responses = [OfferResponse(f"r{i}", "o", "e1", "C1", "c", "credit_card", "push", "ignored", i) for i in range(5)]
    await scorer.learn([_inbound(response) for response in responses])  # 5 rows: a checkpoint is due
    checkpointed = scorer.models.live["credit_card"].version
    restarted, _, _ = await _scorer(settings)
    assert restarted.models.live["credit_card"].model.rows_learned == 5
    assert restarted.models.live["credit_card"].version.parent_service_number == checkpointed.service_number
    assert len(registry.lineage(model_name("credit_card"))) >= 3
    assert registry.deployments(restarted.models.live["credit_card"].version.service_number)
    await redis.aclose()
