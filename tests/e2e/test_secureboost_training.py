"""SecureBoost trained with the live partner service over the exchange topics (Paillier 2048), served by
scoring for the product configured for it, and the leak test: every message that crossed, recorded and
searched for raw partner feature values, labels and gradients in clear."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import redis.asyncio as aioredis

from demo.generator.history import campaign_history, profile_of
from demo.generator.partner_feed import partner_records
from demo.generator.population import customer_records, make_population
from services.core.avro import AvroCodec
from services.core.clients import consume, produce
from services.core.config import Settings
from services.core.kafka import Inbound
from services.core.supervisor import PARTNER_KEY_SUFFIX, ServiceRunner, partner_env
from services.core.waiting import wait_until
from services.exchange.sbt_training import train_secureboost_over_exchange
from services.models.registry import ModelRegistry
from services.models.secureboost import BoostingParameters
from services.models.secureboost.serving import secureboost_model_name
from services.partner.store import PartnerStore
from services.protocol.exchange import open_payload
from services.protocol.exchange_messages import SbtGradients, SbtHistograms
from services.protocol.kinds import kind_of
from services.protocol.stream_messages import CustomerEvent, ExchangeMessage
from services.scoring.scorer import Scorer

PRODUCT = "travel_insurance"


async def test_secureboost_over_topics_then_scored_with_the_partners_bits_and_nothing_raw_crossed(
    settings: Settings, topics: list[str], codec: AvroCodec, tmp_path: Path,
) -> None:
    customers = make_population(300, seed=11)
    feed = list(partner_records(customers, overlap=0.8, outsiders=40, seed=5))
    shared = len({json.loads(v)["national_id"] for _, v in feed} & {c.national_id for c in customers})
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    prefix = settings.redis_key_prefix
    services = ServiceRunner(settings, tmp_path / "logs")
    try:
        services.start("ingest", wait=False)
        services.start("exchange", wait=False)
        services.start("partner", extra_env=partner_env(settings), wait=False)
        services.wait_all_ready()
        await produce(settings.kafka_bootstrap_servers, settings.topic("partner.features.raw"), feed)
        await produce(settings.kafka_bootstrap_servers, settings.topic("bank.events.raw"),
                      customer_records(customers, 1_764_054_000_000))

        async def aligned() -> bool:
            return len([k async for k in redis.scan_iter(match=f"{prefix}join:*", count=1000)]) >= shared
        await wait_until(aligned, 90, "PSI to align every shared customer")

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
        joined = await redis.mget([f"{prefix}join:{c.customer_id}" for c in customers])
        aligned_customer = next(c for c, join_id in zip(customers, joined) if join_id)
        await scorer.store_profiles([Inbound(profile_of(aligned_customer), None, "t", 0, 0, 0, None)])
        event = CustomerEvent("e1", aligned_customer.customer_id, "card_spend_abroad", 88000, "CNY", "JP", 0, 0, "t", 0, 0)
        [[scored]] = await scorer.score([Inbound(event, None, "t", 0, 0, 0, None)])
        travel = next(s for s in scored.message.scores if s.product == PRODUCT)
        assert travel.partner_contributed and travel.service_number == version.service_number

        # The leak test: everything that crossed, in either direction.
        crossed = await consume(settings.exchange_servers,
                                [settings.topic("exchange.to_partner"), settings.topic("exchange.to_bank")],
                                idle_s=2, timeout_s=30)
        messages = [codec.decode(record.value, ExchangeMessage) for record in crossed]
        payloads = b"".join(message.payload for message in messages)
        raw_values = {value for _, raw in feed for value in json.loads(raw)["features"].values() if value not in (0.0, 1.0)}
        for value in raw_values:
            for encoded in (struct.pack(">d", value), struct.pack("<d", value)):
                assert encoded not in payloads, f"raw partner feature value {value} crossed"
        labels = [row.label for row in history]
        assert bytes(labels[:64]) not in payloads and struct.pack(f"<{64}d", *labels[:64]) not in payloads
        gradients = [open_payload(codec, m, SbtGradients) for m in messages if m.kind == kind_of(SbtGradients).name]
        assert len(gradients) >= parameters.trees
        assert all(g.encrypted and min(v.bit_length() for v in g.values) > 2048 for g in gradients)  # mod n^2
        histograms = [open_payload(codec, m, SbtHistograms) for m in messages if m.kind == kind_of(SbtHistograms).name]
        assert histograms and all(h.encrypted for h in histograms)
        assert {m.kind for m in messages if m.sender == "partner" and m.kind.startswith("sbt_")} == {
            "sbt_histograms", "sbt_split_rows", "sbt_decisions"}
    finally:
        services.stop_all()
        await redis.aclose()
