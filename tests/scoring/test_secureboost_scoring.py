"""SecureBoost served beside LR (real Redis, SQLite): the partner's split table in its store gives the bits the
exchange keeps for the bank, and scoring walks the bank's trees with them for the products configured for it."""
from __future__ import annotations

import datetime as dt
import random

import numpy as np
import redis.asyncio as aioredis

from services.core.avro import AvroCodec
from services.core.config import Settings
from services.exchange.app import BankExchange
from services.models.bank_features import FEATURE_NAMES, feature_vector
from services.models.federated import PARTNER_REASON, BankHalf, federated_model_name
from services.models.preparation import Preparation
from services.models.registry import DataFingerprint, ModelRegistry
from services.models.secureboost import BankParty, BoostingParameters, PartnerParty, train_secureboost
from services.models.secureboost.serving import SbtBankHalf, secureboost_model_name
from services.partner import features as partner_features
from services.partner.store import PartnerStore
from services.protocol.exchange_messages import SbtDecisions
from services.scoring.scorer import Scorer
from tests.scoring.test_scorer import PROFILE, _event, _inbound

PRODUCT = "travel_insurance"


def trained(codec: AvroCodec) -> tuple[BankParty, PartnerParty]:
    """A small model on the bank's feature vector and the partner's, where both parties' columns matter."""
    rng = np.random.default_rng(3)
    rows = 600
    ids = [f"{i:032x}" for i in range(rows)]
    x_bank = rng.normal(size=(rows, len(FEATURE_NAMES))) * 3
    x_partner = rng.normal(size=(rows, len(partner_features.FEATURE_NAMES)))
    labels = ((x_bank[:, 0] > 0) ^ (x_partner[:, 0] > 0.3)).astype(int)
    bank = BankParty(ids, labels, x_bank, BoostingParameters(trees=4, depth=3), encrypted=False)
    partner = PartnerParty(ids, x_partner, shuffle=random.Random(0))
    train_secureboost(bank, partner, codec=codec, model_name=secureboost_model_name(PRODUCT), version="sbt@p1")
    assert bank.model.partner_splits > 0
    return bank, partner


async def test_configured_product_is_scored_by_secureboost_with_the_partners_bits(settings: Settings, codec: AvroCodec) -> None:
    bank, partner = trained(codec)
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    prefix = settings.redis_key_prefix
    registry = ModelRegistry(settings.database_url.get_secret_value())
    half = SbtBankHalf(PRODUCT, bank.model, "sbt@p1")
    version = registry.register(
        model_name=secureboost_model_name(PRODUCT), algorithm="federated SecureBoost", parameters={},
        feature_names=list(FEATURE_NAMES), rows_learned=600, iterations=4, fingerprint=DataFingerprint(""),
        operator="test", started_at=dt.datetime.now(dt.UTC), checkpoint=half.to_bytes())

    # The partner keeps its half in its own store; its answer for two aligned people crosses to the exchange.
    store = PartnerStore(redis, f"{prefix}p.")
    await store.put_split_table(secureboost_model_name(PRODUCT), "sbt@p1", partner.split_table)
    tables = await store.split_tables()
    assert tables == {secureboost_model_name(PRODUCT): ("sbt@p1", partner.split_table)}
    person = np.array([[1.5, -0.2, 0.1, 3.0]])[:, :len(partner_features.FEATURE_NAMES)]
    person = np.pad(person, ((0, 0), (0, len(partner_features.FEATURE_NAMES) - person.shape[1])))
    bits = np.packbits(tables[secureboost_model_name(PRODUCT)][1].decisions(person), axis=1).tobytes()
    join_c1, join_c2 = "ab" * 16, "cd" * 16
    splits = len(partner.split_table.rules)
    exchange = BankExchange(redis, prefix, codec)
    await exchange._store_split_decisions(SbtDecisions((secureboost_model_name(PRODUCT),), ("sbt@p1",), (splits,),
                                                       (join_c1,), bits))
    await exchange._store_split_decisions(SbtDecisions((secureboost_model_name(PRODUCT),), ("sbt@p0",), (splits,),
                                                       (join_c2,), bits))  # an older partner half: not served

    # A federated LR half of the same product, with partial scores for both: the configuration picks SecureBoost.
    lr_half = BankHalf(PRODUCT, np.zeros(len(FEATURE_NAMES)),
                       Preparation.standardisation(np.zeros(len(FEATURE_NAMES)), np.ones(len(FEATURE_NAMES))), 0.0, "fedlr@p1")
    registry.register(model_name=federated_model_name(PRODUCT), algorithm="federated logistic regression", parameters={},
                      feature_names=list(FEATURE_NAMES), rows_learned=600, iterations=1, fingerprint=DataFingerprint(""),
                      operator="test", started_at=dt.datetime.now(dt.UTC), checkpoint=lr_half.to_bytes())
    for join_id in (join_c1, join_c2):
        await redis.hset(f"{prefix}partial:{join_id}", federated_model_name(PRODUCT), "fedlr@p1|0.5")

    scorer = Scorer.start(redis, prefix, registry, secureboost_products=(PRODUCT,))
    other = PROFILE.__class__(**{**{f: getattr(PROFILE, f) for f in PROFILE.__slots__}, "customer_id": "C2"})
    await scorer.store_profiles([_inbound(PROFILE), _inbound(other, b"C2")])
    await redis.set(f"{prefix}join:C1", join_c1)
    await redis.set(f"{prefix}join:C2", join_c2)
    results = await scorer.score([_inbound(_event("e1")), _inbound(_event("e2", "C2"), b"C2")])
    first, second = (dict((s.product, s) for s in result[0].message.scores) for result in results)

    travel = first[PRODUCT]
    features = feature_vector(_event("e1"), PROFILE)[None, :]
    expected = bank.model.probabilities(features, partner.split_table.decisions(person))[0]
    assert travel.partner_contributed and travel.service_number == version.service_number
    assert travel.model_version == f"{secureboost_model_name(PRODUCT)}@v1"
    assert abs(travel.propensity - expected) < 1e-12
    assert {reason.feature for reason in travel.reasons} <= {*FEATURE_NAMES, PARTNER_REASON}
    assert not first["credit_card"].partner_contributed  # not configured for SecureBoost
    # No SecureBoost bits of the deployed partner version: the bank-only model, not the product's LR half.
    assert not second[PRODUCT].partner_contributed and second[PRODUCT].service_number.startswith("CS-PROPENSITY")
    lr_scorer = Scorer.start(redis, prefix, registry)  # not configured: LR serves it
    [[lr_scored]] = await lr_scorer.score([_inbound(_event("e3", "C2"), b"C2")])
    lr_travel = next(s for s in lr_scored.message.scores if s.product == PRODUCT)
    assert lr_travel.partner_contributed and lr_travel.model_version.startswith(federated_model_name(PRODUCT))
    # An erased customer's decisions go with the join id.
    await exchange._erase(["C1"])
    assert await redis.exists(f"{prefix}sbt:{join_c1}") == 0 and await redis.exists(f"{prefix}sbt:{join_c2}") == 1
    await redis.aclose()
    registry.close()


def test_the_bank_half_explains_its_score_with_the_partner_as_one_reason(codec: AvroCodec) -> None:
    bank, partner = trained(codec)
    rng = np.random.default_rng(9)
    x_bank = rng.normal(size=(50, len(FEATURE_NAMES))) * 3
    x_partner = rng.normal(size=(50, len(partner_features.FEATURE_NAMES)))
    decisions = partner.split_table.decisions(x_partner)
    half = SbtBankHalf(PRODUCT, bank.model, "sbt@p1")
    propensities, shares = half.score(x_bank, [row.tobytes() for row in np.packbits(decisions, axis=1)])
    assert np.allclose(propensities, bank.model.probabilities(x_bank, decisions), atol=1e-12)
    _, base = bank.model.contributions(x_bank, decisions)
    assert np.allclose(base + shares.sum(axis=1), bank.model.raw_scores(x_bank, decisions))
    assert np.abs(shares[:, -1]).max() > 0  # the partner's splits moved some scores
    assert SbtBankHalf.from_bytes(half.to_bytes()).trees.to_bytes() == bank.model.to_bytes()
