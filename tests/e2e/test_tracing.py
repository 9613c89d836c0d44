"""One trace follows one event from the bank's producer through ingest, scoring and dispatch
to the offer topic, with each hop a child of the one before (W3C trace context in Kafka headers)."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from demo.waiting import wait_profiles_stored
from services.core.clients import consume, produce
from services.core.config import Settings
from services.core.telemetry import headers_from_context
from services.protocol.catalog import CHANNELS, offers_topic
from tests.samples import customer_row as _customer
from tests.samples import transaction_row as _transaction


async def test_one_trace_links_every_hop_from_raw_event_to_offer(settings: Settings, services, tmp_path: Path) -> None:
    trace_files = {name: tmp_path / f"{name}.spans.jsonl" for name in ("ingest", "scoring", "dispatch")}
    for name, path in trace_files.items():
        services.start(name, extra_env={"CIPHERSTREAM_TRACE_FILE": str(path)}, wait=False)
    services.wait_all_ready()
    raw = settings.topic("bank.events.raw")
    await produce(settings.kafka_bootstrap_servers, raw, [(b"A", _customer("A", "young_professional", "push"))])
    await consume(settings.kafka_bootstrap_servers, [settings.topic("customer.profiles")], until=bool, timeout_s=20)
    await wait_profiles_stored(settings, ["A"])  # so the traced transaction becomes an offer, not a suppression

    tracer = TracerProvider().get_tracer("core-banking-cdc")
    with tracer.start_as_current_span("cdc publish", kind=SpanKind.PRODUCER) as root:
        headers = headers_from_context()
    await produce(settings.kafka_bootstrap_servers, raw, [(b"A", _transaction("1", "A", "salary", "30000.00"))], headers)
    offers = await consume(settings.kafka_bootstrap_servers, [settings.topic(offers_topic(c)) for c in CHANNELS],
                           until=bool, timeout_s=30)
    assert offers, "no offer came out"
    assert dict(offers[0].headers).get("traceparent", b"").decode().split("-")[1] == format(root.get_span_context().trace_id, "032x")
    services.stop_all()  # flushes the span exporters

    trace_id = f"0x{root.get_span_context().trace_id:032x}"
    spans = [json.loads(line) for path in trace_files.values() if path.exists() for line in path.read_text().splitlines()]
    ours = {span["name"]: span for span in spans if span["context"]["trace_id"] == trace_id}
    chain = ["bank.events.raw process", "customer.events publish", "customer.events process", "scores publish",
             "scores process", "offers.push publish"]
    assert set(chain) <= set(ours), f"missing spans: {set(chain) - set(ours)}"
    assert ours[chain[0]]["parent_id"] == f"0x{root.get_span_context().span_id:016x}"
    for parent, child in itertools.pairwise(chain):
        assert ours[child]["parent_id"] == ours[parent]["context"]["span_id"], f"{child} is not a child of {parent}"
    assert ours["customer.events process"]["resource"]["attributes"]["service.name"] == "scoring"
    assert ours["scores process"]["kind"] == "SpanKind.CONSUMER" and ours["offers.push publish"]["kind"] == "SpanKind.PRODUCER"
    assert ours["scores process"]["attributes"]["messaging.system"] == "kafka"
