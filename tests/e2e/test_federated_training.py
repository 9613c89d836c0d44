"""Federated training with the live partner service over the exchange topics, then federated
scoring, and the leak test: every message that crossed, recorded and searched for raw partner
feature values and labels."""
from __future__ import annotations

import asyncio
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
from services.core.supervisor import ServiceRunner, partner_env
from services.exchange.training import train_federated_over_exchange
from services.models.federated import federated_model_name
from services.models.registry import ModelRegistry
from services.protocol.exchange import open_payload
from services.protocol.exchange_messages import EncryptedResiduals, TrainingRun, UnmaskedGradient
from services.protocol.kinds import kind_of
from services.protocol.stream_messages import CustomerEvent, ExchangeMessage
from services.scoring.scorer import Scorer

PRODUCT = "travel_insurance"


async def _wait(check, timeout_s: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not (value := await check()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.3)
    return value


async def test_training_over_topics_then_federated_scores_and_nothing_raw_crossed(
    settings: Settings, topics: list[str], codec: AvroCodec, tmp_path: Path,
) -> None:
    customers = make_population(400, seed=9)
    feed = list(partner_records(customers, overlap=0.8, outsiders=50, seed=4))
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
        assert await _wait(aligned), "PSI did not align every shared customer"

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
        assert await _wait(partials_of_new_version), "the partner did not push partial scores of the new version"

        # Scoring: an aligned customer gets the federated score, with the partner's share as a reason.
        scorer = Scorer.start(redis, prefix, registry)
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
        [run] = [open_payload(codec, m, TrainingRun) for m in messages if m.kind == kind_of(TrainingRun).name]
        # The run's public step settings (a first step of 2.0) are bank numbers that may equal a feature value.
        settings_values = {run.start.learning_rate, run.start.l2, run.start.learning_rate_decay}
        raw_values = {value for _, raw in feed for value in json.loads(raw)["features"].values()
                      if value not in (0.0, 1.0) and value not in settings_values}
        assert len(raw_values) > 100
        for value in raw_values:
            # 8-byte encodings: a 4-byte pattern turns up by chance in megabytes of ciphertext.
            for encoded in (struct.pack(">d", value), struct.pack("<d", value)):
                assert encoded not in payloads, f"raw partner feature value {value} crossed"
        to_partner = [m for m in messages if m.sender == "bank"]
        labels = [row.label for row in history]
        assert bytes(labels[:64]) not in payloads and struct.pack(f"<{64}d", *labels[:64]) not in payloads
        residuals = [open_payload(codec, m, EncryptedResiduals) for m in to_partner
                     if m.kind == kind_of(EncryptedResiduals).name]
        assert residuals and all(r.encrypted and min(v.bit_length() for v in r.values) > 2048 for r in residuals)
        gradients = [open_payload(codec, m, UnmaskedGradient) for m in to_partner
                     if m.kind == kind_of(UnmaskedGradient).name]
        assert gradients and all(min(v.bit_length() for v in g.values) > 1900 for g in gradients)  # masked mod n
    finally:
        services.stop_all()
        await redis.aclose()
