"""The bank's exchange service and the partner service, as real processes over real topics:
PSI alignment finds exactly the shared people, and partial scores reach the bank's Redis."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis

from demo.generator.population import customer_records
from services.core.avro import AvroCodec
from services.core.clients import consume, produce
from services.core.config import Settings
from services.core.dead_letter import DeadLetter
from services.core.kafka import create_topics
from services.core.runtime import start_broker
from services.core.supervisor import ServiceRunner
from services.partner.features import FEATURE_NAMES
from services.protocol.identity import id_hash
from services.protocol.stream_messages import ExchangeMessage
from tests.psi_scenario import psi_scenario


async def _wait_for(check, timeout_s: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await check()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.3)


@pytest.fixture(params=["one cluster", "separate exchange cluster"])
async def exchange_settings(request: pytest.FixtureRequest, settings: Settings, topics: list[str], tmp_path: Path):
    """The bank and partner on one cluster, or the exchange topics on a cluster of their own."""
    if request.param == "one cluster":
        yield settings
        return
    broker, servers = start_broker(tmp_path / "exchange-broker")
    try:
        await create_topics(servers, [settings.topic(name) for name in ("exchange.to_partner", "exchange.to_bank")],
                            settings.topic_partitions)
        yield settings.model_copy(update={"exchange_bootstrap_servers": servers})
    finally:
        broker.stop()


async def test_psi_over_topics_aligns_exactly_the_shared_people_and_partial_scores_arrive(
    exchange_settings: Settings, codec: AvroCodec, tmp_path: Path,
) -> None:
    settings = exchange_settings
    services = ServiceRunner(settings, tmp_path / "logs")
    try:
        await _align_and_score(settings, services, codec)
    finally:
        services.stop_all()


async def _align_and_score(settings: Settings, services: ServiceRunner, codec: AvroCodec) -> None:
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    scenario = await psi_scenario(settings, redis, customers=120, outsiders=40, seeds=(3, 5))
    customers, feed, shared, partner_prefix, model = (scenario.customers, scenario.feed, scenario.shared,
                                                      scenario.partner_prefix, scenario.model)

    services.start("ingest", wait=False)
    services.start("exchange", wait=False)
    services.start("partner", extra_env={"CIPHERSTREAM_REDIS_KEY_PREFIX": partner_prefix}, wait=False)
    services.wait_all_ready()
    await produce(settings.kafka_bootstrap_servers, settings.topic("partner.features.raw"),
                  [*feed, (b"bad", b'{"partner_record_id": "P1", "features": {}}')])
    await produce(settings.kafka_bootstrap_servers, settings.topic("bank.events.raw"), customer_records(customers, 1_764_054_000_000))

    prefix = settings.redis_key_prefix
    by_customer = {c.customer_id: c for c in customers}

    async def aligned() -> dict[str, str] | None:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}join:*")]
        if len(keys) < len(shared):
            return None
        values = await redis.mget(keys)
        return {key.decode()[len(prefix) + 5:]: value.decode() for key, value in zip(keys, values)}

    joined = await _wait_for(aligned)
    assert joined is not None, "PSI did not finish"
    assert {by_customer[customer].national_id for customer in joined} == shared

    async def all_scored() -> bool:
        present = await asyncio.gather(*(redis.exists(f"{prefix}partial:{join_id}") for join_id in joined.values()))
        return all(present)

    assert await _wait_for(all_scored), "partial scores did not arrive for every aligned customer"
    feed_by_nid = {json.loads(v)["national_id"]: json.loads(v)["features"] for _, v in feed}
    for customer, join_id in list(joined.items())[:10]:
        stored = (await redis.hget(f"{prefix}partial:{join_id}", model.name)).decode()
        version, score = stored.split("|")
        features = np.array([feed_by_nid[by_customer[customer].national_id][name] for name in FEATURE_NAMES])
        assert version == "v1" and float(score) == pytest.approx(float(model.partial_scores(features[None, :])[0]), rel=1e-12)

    # The partner's and the bank's join ids agree, and the partner's malformed record is a dead letter.
    partner_join = {key.decode()[len(partner_prefix) + 6:] async for key in redis.scan_iter(match=f"{partner_prefix}pjoin:*")}
    assert partner_join == set(joined.values())
    dead = await consume(settings.kafka_bootstrap_servers, [settings.topic("dlq.partner.features.raw")],
                         until=lambda got: len(got) >= 1, timeout_s=10)
    assert [codec.decode(r.value, DeadLetter).reason for r in dead] == ["schema"]

    # Nothing that crossed carries a national id or its hash, in clear.
    exchange_topics = [settings.topic("exchange.to_partner"), settings.topic("exchange.to_bank")]
    crossed = await consume(settings.exchange_servers, exchange_topics, idle_s=2, timeout_s=20)
    assert len(crossed) >= 5
    if settings.exchange_bootstrap_servers:  # nothing crossed on the parties' own cluster
        assert await consume(settings.kafka_bootstrap_servers, exchange_topics, idle_s=1, timeout_s=5) == []
    payloads = b"".join(codec.decode(r.value, ExchangeMessage).payload for r in crossed)
    for customer in customers[:50]:
        assert customer.national_id.encode() not in payloads and bytes.fromhex(id_hash(customer.national_id)) not in payloads
    await redis.aclose()
