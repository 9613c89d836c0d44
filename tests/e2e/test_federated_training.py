"""Federated training with the live partner service over the exchange topics, then federated
scoring, and the leak test: every message that crossed, recorded and searched for raw partner
feature values and labels."""
from __future__ import annotations

import json
from pathlib import Path

from demo.generator.history import campaign_history
from services.core.avro import AvroCodec
from services.core.config import Settings
from services.core.waiting import wait_until
from services.exchange.training import train_federated_over_exchange
from services.models.federated import federated_model_name
from services.models.registry import ModelRegistry
from services.protocol.exchange import open_payload
from services.protocol.exchange_messages import EncryptedResiduals, TrainingRun, UnmaskedGradient
from services.protocol.kinds import kind_of
from services.scoring.scorer import Scorer
from tests.e2e.exchange_run import aligned_parties, assert_nothing_raw_crossed, crossed_messages, score_aligned_customer

PRODUCT = "travel_insurance"


async def test_training_over_topics_then_federated_scores_and_nothing_raw_crossed(
    settings: Settings, topics: list[str], codec: AvroCodec, tmp_path: Path,
) -> None:
    prefix = settings.redis_key_prefix
    async with aligned_parties(settings, tmp_path, size=400, seed=9, outsiders=50, feed_seed=4) as parties:
        customers, redis, shared = parties.customers, parties.redis, parties.shared
        registry = ModelRegistry(settings.database_url.get_secret_value())
        history = campaign_history(customers, PRODUCT)
        result = await train_federated_over_exchange(settings, redis, registry, PRODUCT, history, epochs=2,
                                                     batch_size=128)
        assert result.rows == shared and result.losses[-1] < result.losses[0]
        version, checkpoint = registry.latest(federated_model_name(PRODUCT))
        assert version.service_number == result.version.service_number and checkpoint
        label = json.loads(checkpoint)["partner_version"]

        async def partials_of_new_version() -> bool:
            join_ids = [v.decode() for v in await redis.mget(
                [f"{prefix}join:{c.customer_id}" for c in customers]) if v]
            stored = [await redis.hget(f"{prefix}partial:{j}", federated_model_name(PRODUCT)) for j in join_ids]
            return len(stored) == shared and all(s and s.decode().startswith(label + "|") for s in stored)
        await wait_until(partials_of_new_version, 60, "the partner to push partial scores of the new version")

        # Scoring: an aligned customer gets the federated score, with the partner's share as a reason.
        scorer = Scorer.start(redis, prefix, registry)
        travel = await score_aligned_customer(parties, scorer, prefix, PRODUCT)
        assert travel.partner_contributed and travel.service_number == version.service_number

        # The leak test: everything that crossed, in either direction.
        messages = await crossed_messages(settings, codec)
        [run] = [open_payload(codec, m, TrainingRun) for m in messages if m.kind == kind_of(TrainingRun).name]
        # The run's public step settings (a first step of 2.0) are bank numbers that may equal a feature value.
        assert_nothing_raw_crossed(messages, parties.feed, history,
                                   public={run.start.learning_rate, run.start.l2, run.start.learning_rate_decay})
        to_partner = [m for m in messages if m.sender == "bank"]
        residuals = [open_payload(codec, m, EncryptedResiduals) for m in to_partner
                     if m.kind == kind_of(EncryptedResiduals).name]
        assert residuals and all(r.encrypted and min(v.bit_length() for v in r.values) > 2048 for r in residuals)
        gradients = [open_payload(codec, m, UnmaskedGradient) for m in to_partner
                     if m.kind == kind_of(UnmaskedGradient).name]
        assert gradients and all(min(v.bit_length() for v in g.values) > 1900 for g in gradients)  # masked mod n
