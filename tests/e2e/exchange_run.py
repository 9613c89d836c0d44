"""What the federated training runs over the exchange share: the bank's and the partner's services up
with PSI done (`aligned_parties`), one aligned customer scored (`score_aligned_customer`), and the leak
test's search of everything that crossed for raw partner values and labels (`assert_nothing_raw_crossed`)."""
from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from demo.generator.history import profile_of
from demo.generator.partner_feed import partner_records
from demo.generator.population import SyntheticCustomer, customer_records, make_population
from services.core.avro import AvroCodec
from services.core.clients import consume, produce
from services.core.config import Settings
from services.core.kafka import Inbound
from services.core.supervisor import ServiceRunner, partner_env
from services.core.waiting import wait_until
from services.exchange.training import LabelledRow
from services.protocol.stream_messages import CustomerEvent, ExchangeMessage, ProductScore
from services.scoring.scorer import Scorer


@dataclass(frozen=True)
class AlignedParties:
    customers: list[SyntheticCustomer]
    feed: list[tuple[bytes, bytes]]  # the partner's raw feature records
    shared: int  # customers both parties hold: PSI aligned each of them
    redis: aioredis.Redis


@asynccontextmanager
async def aligned_parties(settings: Settings, tmp_path: Path, *, size: int, seed: int, outsiders: int,
                          feed_seed: int) -> AsyncIterator[AlignedParties]:
    """ingest, exchange and the partner running, both sides' data produced, and PSI done for every
    customer both hold; stopped afterwards."""
    customers = make_population(size, seed=seed)
    feed = list(partner_records(customers, overlap=0.8, outsiders=outsiders, seed=feed_seed))
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
        yield AlignedParties(customers, feed, shared, redis)
    finally:
        services.stop_all()
        await redis.aclose()


async def score_aligned_customer(parties: AlignedParties, scorer: Scorer, prefix: str, product: str) -> ProductScore:
    """`product`'s score for a travel-like event of one customer PSI aligned."""
    joined = await parties.redis.mget([f"{prefix}join:{c.customer_id}" for c in parties.customers])
    aligned_customer = next(c for c, join_id in zip(parties.customers, joined) if join_id)
    await scorer.store_profiles([Inbound(profile_of(aligned_customer), None, "t", 0, 0, 0, None)])
    event = CustomerEvent("e1", aligned_customer.customer_id, "card_spend_abroad", 88000, "CNY", "JP", 0, 0, "t", 0, 0)
    [[scored]] = await scorer.score([Inbound(event, None, "t", 0, 0, 0, None)])
    return next(s for s in scored.message.scores if s.product == product)


async def crossed_messages(settings: Settings, codec: AvroCodec) -> list[ExchangeMessage]:
    """Everything that crossed, in either direction."""
    crossed = await consume(settings.exchange_servers,
                            [settings.topic("exchange.to_partner"), settings.topic("exchange.to_bank")],
                            idle_s=2, timeout_s=30)
    return [codec.decode(record.value, ExchangeMessage) for record in crossed]


def assert_nothing_raw_crossed(messages: list[ExchangeMessage], feed: list[tuple[bytes, bytes]],
                               history: list[LabelledRow], public: Collection[float] = ()) -> None:
    """No raw partner feature value and no run of labels in any payload. `public`: numbers the
    protocol sends in clear on purpose (a run's step settings), which may equal a feature value."""
    payloads = b"".join(message.payload for message in messages)
    raw_values = {value for _, raw in feed for value in json.loads(raw)["features"].values()
                  if value not in (0.0, 1.0) and value not in public}
    assert len(raw_values) > 100
    for value in raw_values:
        # 8-byte encodings: a 4-byte pattern turns up by chance in megabytes of ciphertext.
        for encoded in (struct.pack(">d", value), struct.pack("<d", value)):
            assert encoded not in payloads, f"raw partner feature value {value} crossed"
    labels = [row.label for row in history]
    assert bytes(labels[:64]) not in payloads and struct.pack(f"<{64}d", *labels[:64]) not in payloads
