"""SecureBoost trained with the live partner service over the exchange topics (Paillier 2048), served by
scoring for the product configured for it, and the leak test: every message that crossed, recorded and
searched for raw partner feature values, labels and gradients in clear."""
from __future__ import annotations

import json
from pathlib import Path

from demo.generator.history import campaign_history
from services.core.avro import AvroCodec
from services.core.config import Settings
from services.core.supervisor import PARTNER_KEY_SUFFIX
from services.core.waiting import wait_until
from services.exchange.sbt_training import train_secureboost_over_exchange
from services.models.registry import ModelRegistry
from services.models.secureboost import BoostingParameters
from services.models.secureboost.serving import secureboost_model_name
from services.partner.store import PartnerStore
from services.protocol.exchange import open_payload
from services.protocol.exchange_messages import SbtGradients, SbtHistograms
from services.protocol.kinds import kind_of
from services.scoring.scorer import Scorer
from tests.e2e.exchange_run import aligned_parties, assert_nothing_raw_crossed, crossed_messages, score_aligned_customer

PRODUCT = "travel_insurance"


async def test_secureboost_over_topics_then_scored_with_the_partners_bits_and_nothing_raw_crossed(
    settings: Settings, topics: list[str], codec: AvroCodec, tmp_path: Path,
) -> None:
    prefix = settings.redis_key_prefix
    async with aligned_parties(settings, tmp_path, size=300, seed=11, outsiders=40, feed_seed=5) as parties:
        customers, redis, shared = parties.customers, parties.redis, parties.shared
        registry = ModelRegistry(settings.database_url.get_secret_value())
        history = campaign_history(customers, PRODUCT)
        parameters = BoostingParameters(trees=3, depth=2, bins=16)
        result = await train_secureboost_over_exchange(settings, redis, registry, PRODUCT, history, parameters=parameters)
        assert result.rows == shared and result.losses[-1] < result.losses[0]
        version, checkpoint = registry.latest(secureboost_model_name(PRODUCT))
        assert version.service_number == result.version.service_number and checkpoint
        label = json.loads(checkpoint)["partner_version"]

        # The partner filed its split table under the version, and pushed everyone's bits for it.
        tables = await PartnerStore(redis, prefix + PARTNER_KEY_SUFFIX).split_tables()
        assert tables[secureboost_model_name(PRODUCT)][0] == label

        async def decisions_of_new_version() -> bool:
            join_ids = [v.decode() for v in await redis.mget([f"{prefix}join:{c.customer_id}" for c in customers]) if v]
            stored = [await redis.hget(f"{prefix}sbt:{j}", secureboost_model_name(PRODUCT)) for j in join_ids]
            return len(stored) == shared and all(s and s.decode().startswith(label + "|") for s in stored)
        await wait_until(decisions_of_new_version, 60, "the partner to push split decisions of the new version")

        # Scoring: an aligned customer gets the SecureBoost score for the configured product.
        scorer = Scorer.start(redis, prefix, registry, secureboost_products=(PRODUCT,))
        travel = await score_aligned_customer(parties, scorer, prefix, PRODUCT)
        assert travel.partner_contributed and travel.service_number == version.service_number

        # The leak test: everything that crossed, in either direction.
        messages = await crossed_messages(settings, codec)
        assert_nothing_raw_crossed(messages, parties.feed, history)
        gradients = [open_payload(codec, m, SbtGradients) for m in messages if m.kind == kind_of(SbtGradients).name]
        assert len(gradients) >= parameters.trees
        assert all(g.encrypted and min(v.bit_length() for v in g.values) > 2048 for g in gradients)  # mod n^2
        histograms = [open_payload(codec, m, SbtHistograms) for m in messages if m.kind == kind_of(SbtHistograms).name]
        assert histograms and all(h.encrypted for h in histograms)
        assert {m.kind for m in messages if m.sender == "partner" and m.kind.startswith("sbt_")} == {
            "sbt_histograms", "sbt_split_rows", "sbt_decisions"}
