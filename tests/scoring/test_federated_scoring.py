"""Scoring combines the bank's federated half with the partner's partial score (real Redis, SQLite)."""
from __future__ import annotations

import datetime as dt
import math

import numpy as np

from services.core.config import Settings
from services.models.bank_features import FEATURE_NAMES, feature_vector
from services.models.federated import PARTNER_REASON, BankHalf, federated_model_name
from services.models.preparation import Preparation
from services.models.registry import DataFingerprint
from tests.scoring.test_scorer import PROFILE, _event, _inbound, _scorer


async def test_aligned_customer_gets_the_federated_score_and_others_the_bank_model(settings: Settings) -> None:
    scorer, redis, registry = await _scorer(settings)
    half = BankHalf("travel_insurance", np.linspace(-0.5, 0.5, len(FEATURE_NAMES)),
                    Preparation.standardisation(np.zeros(len(FEATURE_NAMES)), np.full(len(FEATURE_NAMES), 4.0)), -1.25,
                    "fedlr.travel_insurance@p7")
    version = registry.register(
        model_name=federated_model_name("travel_insurance"), algorithm="federated logistic regression",
        parameters={}, feature_names=list(FEATURE_NAMES), rows_learned=10, iterations=1,
        fingerprint=DataFingerprint(""), operator="test", started_at=dt.datetime.now(dt.UTC),
        checkpoint=half.to_bytes())
    scorer.models.federated_loaded_at = -1e9  # refresh now
    other = PROFILE.__class__(**{**{f: getattr(PROFILE, f) for f in PROFILE.__slots__}, "customer_id": "C2"})
    await scorer.store_profiles([_inbound(PROFILE), _inbound(other, b"C2")])
    prefix = settings.redis_key_prefix
    await redis.set(f"{prefix}join:C1", "ab" * 16)
    await redis.hset(f"{prefix}partial:{'ab' * 16}", "fedlr.travel_insurance", "fedlr.travel_insurance@p7|0.75")
    await redis.set(f"{prefix}join:C2", "cd" * 16)  # aligned, but its partial score is for an older partner version
    await redis.hset(f"{prefix}partial:{'cd' * 16}", "fedlr.travel_insurance", "fedlr.travel_insurance@p6|0.75")

    results = await scorer.score([_inbound(_event("e1")), _inbound(_event("e2", "C2"), b"C2")])
    first, second = (dict((s.product, s) for s in result[0].message.scores) for result in results)
    expected_log_odds = -1.25 + float(np.sum(half.weights * feature_vector(_event("e1"), PROFILE) / 4.0)) + 0.75
    travel = first["travel_insurance"]
    assert travel.partner_contributed and travel.service_number == version.service_number
    assert math.isclose(travel.propensity, 1 / (1 + math.exp(-expected_log_odds)), rel_tol=1e-12)
    contributions = half.contributions(feature_vector(_event("e1"), PROFILE)[None, :], np.array([0.75]))[0]
    names = [*FEATURE_NAMES, PARTNER_REASON]
    assert [reason.feature for reason in travel.reasons] == [names[i] for i in np.argsort(-np.abs(contributions))[:3]]
    assert not first["credit_card"].partner_contributed
    assert not second["travel_insurance"].partner_contributed
    assert second["travel_insurance"].service_number.startswith("CS-PROPENSITY.TRAVEL_INSURANCE")
    await redis.aclose()
