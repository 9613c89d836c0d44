"""One trace follows a new customer from the bank's CDC record through ingest, the bank's exchange
service, the partner (PSI re-blinding, then a partial-score answer) and back: the W3C context
crosses the exchange topics like every other hop. (Events themselves do not wait for the partner:
its partial scores are computed ahead and stored, so an event's trace stays inside the bank.)"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from demo.generator.partner_feed import partner_records
from demo.generator.population import customer_records, make_population
from services.core.clients import consume, produce
from services.core.config import Settings
from services.core.supervisor import partner_env
from services.core.telemetry import headers_from_context
from services.models.preparation import Preparation
from services.partner.features import FEATURE_NAMES
from services.partner.store import PartnerModel, PartnerStore


async def test_one_trace_crosses_to_the_partner_and_back(settings: Settings, services, tmp_path: Path) -> None:
    customers = make_population(30, seed=12)
    feed = list(partner_records(customers, overlap=1.0, outsiders=0, seed=3))
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    partner_prefix = partner_env(settings)["CIPHERSTREAM_REDIS_KEY_PREFIX"]
    model = PartnerModel("fedlr.travel_insurance", "v1", np.full(len(FEATURE_NAMES), 0.1),
                         Preparation.identity(len(FEATURE_NAMES)))
    await PartnerStore(redis, partner_prefix).put_model(model)
    files = {name: tmp_path / f"{name}.spans.jsonl" for name in ("ingest", "exchange", "partner")}
    for name, path in files.items():
        extra = {"CIPHERSTREAM_TRACE_FILE": str(path)} | (partner_env(settings) if name == "partner" else {})
        services.start(name, extra_env=extra, wait=False)
    services.wait_all_ready()
    await produce(settings.kafka_bootstrap_servers, settings.topic("partner.features.raw"), feed)
    await consume(settings.kafka_bootstrap_servers, [settings.topic("partner.features")],
                  until=lambda got: len(got) >= len(feed), timeout_s=30)

    tracer = TracerProvider().get_tracer("core-banking-cdc")
    with tracer.start_as_current_span("cdc publish", kind=SpanKind.PRODUCER) as root:
        headers = headers_from_context()
    first = customers[0]
    await produce(settings.kafka_bootstrap_servers, settings.topic("bank.events.raw"),
                  list(customer_records([first], 1_764_054_000_000)), headers)

    async def scored() -> bool:
        join_id = await redis.get(f"{settings.redis_key_prefix}join:{first.customer_id}")
        return bool(join_id) and bool(await redis.exists(f"{settings.redis_key_prefix}partial:{join_id.decode()}"))
    for _ in range(120):
        if await scored():
            break
        await asyncio.sleep(0.25)
    assert await scored(), "the customer was not aligned and scored by the partner"
    services.stop_all()  # flushes the span exporters
    await redis.aclose()

    trace_id = f"0x{root.get_span_context().trace_id:032x}"
    spans = [json.loads(line) for path in files.values() if path.exists() for line in path.read_text().splitlines()]
    ours = [span for span in spans if span["context"]["trace_id"] == trace_id]
    by_id = {span["context"]["span_id"]: span for span in ours}

    def path_to_root(span: dict) -> list[str]:  # type: ignore[type-arg]
        names = []
        while span is not None:
            names.append(f"{span['resource']['attributes']['service.name']}:{span['name']}")
            span = by_id.get(span["parent_id"])
        return names[::-1]

    longest = max((path_to_root(span) for span in ours), key=len)
    hops = ["ingest:bank.events.raw process", "exchange:customer.identities process", "partner:exchange.to_partner process",
            "exchange:exchange.to_bank process", "partner:exchange.to_partner process", "exchange:exchange.to_bank process"]
    consumers = [name for name in longest if name.endswith(" process")]
    assert consumers[:len(hops)] == hops, longest
