"""A bank and a partner with partly overlapping people, and a partner model to score them with:
the set-up of the tests that run PSI alignment and partial scores over the real topics."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import redis.asyncio as aioredis

from demo.generator.partner_feed import partner_records
from demo.generator.population import SyntheticCustomer, make_population
from services.core.config import Settings
from services.models.preparation import Preparation
from services.partner.features import FEATURE_NAMES
from services.partner.store import PartnerModel, PartnerStore

PARTNER_PREFIX = "partner:"


@dataclass
class PsiScenario:
    customers: list[SyntheticCustomer]
    feed: list[tuple[bytes, bytes]]  # the partner's raw records
    shared: set[str]  # national ids both parties hold
    partner_prefix: str  # the partner's own Redis key prefix
    model: PartnerModel  # stored in the partner's Redis


async def psi_scenario(settings: Settings, redis: aioredis.Redis, customers: int, outsiders: int,
                       seeds: tuple[int, int]) -> PsiScenario:
    """`customers` bank customers, 60 % of them also at the partner with `outsiders` more, and a
    partner model stored under the partner's key prefix."""
    population = make_population(customers, seed=seeds[0])
    feed = list(partner_records(population, overlap=0.6, outsiders=outsiders, seed=seeds[1]))
    shared = {json.loads(value)["national_id"] for _, value in feed} & {c.national_id for c in population}
    partner_prefix = settings.redis_key_prefix + PARTNER_PREFIX
    model = PartnerModel("fedlr.travel_insurance", "v1", np.linspace(-0.4, 0.4, len(FEATURE_NAMES)),
                         Preparation.standardisation(np.zeros(len(FEATURE_NAMES)), np.full(len(FEATURE_NAMES), 10.0)))
    await PartnerStore(redis, partner_prefix).put_model(model)
    return PsiScenario(population, feed, shared, partner_prefix, model)
