"""The partner's half scores with its own preparation, stored with it in the partner's Redis (never sent)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import redis.asyncio as aioredis

from services.core.config import Settings
from services.models.preparation import Preparation
from services.partner.features import FEATURE_NAMES
from services.partner.store import PartnerModel, PartnerStore


def feed_rows(rows: int = 300) -> np.ndarray:
    rng = np.random.default_rng(8)
    features = rng.poisson(3, size=(rows, len(FEATURE_NAMES))).astype(np.float64)
    features[:, FEATURE_NAMES.index("flight_spend_12m")] = rng.lognormal(8, 1.5, rows)
    features[:, FEATURE_NAMES.index("luxury_spend_share")] = 0.0
    return features


async def test_the_stored_half_gives_the_partial_scores_it_trained_for(settings: Settings) -> None:
    raw = feed_rows()
    preparation = Preparation.fit(raw)
    model = PartnerModel("fedlr.travel_insurance", "v3", np.linspace(-0.3, 0.3, preparation.outputs), preparation)
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    store = PartnerStore(redis, f"{settings.redis_key_prefix}partner-model:")
    try:
        await store.put_model(model)
        [stored] = await store.models()
    finally:
        await redis.aclose()
    assert np.array_equal(stored.partial_scores(raw), preparation.transform(raw) @ model.weights)
    with pytest.raises(ValueError, match="one weight per prepared column"):
        await store.put_model(PartnerModel("m", "v", np.ones(len(FEATURE_NAMES)), preparation))


def test_a_half_stored_before_preparations_reads_as_its_standardisation() -> None:
    mean, scale = np.ones(len(FEATURE_NAMES)), np.full(len(FEATURE_NAMES), 2.0)
    older = json.dumps({"name": "m", "version": "v1", "weights": [1.0] * len(FEATURE_NAMES), "mean": mean.tolist(),
                        "scale": scale.tolist()})
    model = PartnerModel.from_json(older)
    row = np.full((1, len(FEATURE_NAMES)), 5.0)
    assert model.partial_scores(row)[0] == pytest.approx(len(FEATURE_NAMES) * 2.0)
