"""The ingest service against the real broker: canonical events out, malformed input to the DLQ."""
from __future__ import annotations

from services.core.avro import AvroCodec
from services.core.clients import consume, produce
from services.core.config import Settings
from services.core.dead_letter import DeadLetter
from services.protocol.stream_messages import CustomerEvent, CustomerProfile
from tests.samples import cdc

SALARY = cdc("transactions", {"txn_id": "T1", "customer_id": "C1", "kind": "salary", "amount": "15000.00",
                              "currency": "CNY", "country": "CN", "booked_at": "2025-11-25T01:00:00Z"})
PROFILE = cdc("customers", {"customer_id": "C1", "birth_date": "1990-05-01", "opened_at": "2015-01-10",
                            "monthly_income": "15000.00", "balance": "82000.50", "products": ["debit_card"],
                            "segment": "young_professional", "preferred_channel": "push", "timezone": "Asia/Shanghai",
                            "consent_marketing": True})
MALFORMED = [b"{not json", b"\xff\xfe\x00", cdc("transactions", {"txn_id": "T2", "customer_id": "C1"}),
             cdc("transactions", {"txn_id": "T3", "customer_id": "C1", "kind": "card", "amount": "12.345",
                                  "currency": "CNY", "booked_at": "2025-11-25T01:00:00Z"})]


async def test_malformed_event_goes_to_dlq_with_reason_and_valid_ones_are_normalised(
    settings: Settings, services, codec: AvroCodec
) -> None:
    services.start("ingest")
    sent = await produce(settings.kafka_bootstrap_servers, settings.topic("bank.events.raw"),
                         [(b"C1", SALARY), (b"C1", PROFILE)] + [(b"C1", bad) for bad in MALFORMED])
    assert sent == 6
    dlq_topic = settings.topic("dlq.bank.events.raw")
    records = await consume(
        settings.kafka_bootstrap_servers,
        [settings.topic("customer.events"), settings.topic("customer.profiles"), dlq_topic],
        until=lambda got: len(got) >= 6, timeout_s=30,
    )
    by_topic: dict[str, list] = {}
    for record in records:
        by_topic.setdefault(record.topic, []).append(record)
    [event_record] = by_topic[settings.topic("customer.events")]
    event = codec.decode(event_record.value, CustomerEvent)
    assert (event.event_id, event.event_type, event.amount_minor) == ("transactions:T1", "salary_credit", 1_500_000)
    profile = codec.decode(by_topic[settings.topic("customer.profiles")][0].value, CustomerProfile)
    assert profile.segment == "young_professional" and profile.consent_marketing
    dead = [codec.decode(record.value, DeadLetter) for record in by_topic[dlq_topic]]
    assert sorted(letter.value for letter in dead) == sorted(MALFORMED)
    assert {letter.reason for letter in dead} == {"bad_json", "bad_encoding", "schema", "bad_amount"}
    assert all(letter.topic == "bank.events.raw" and letter.detail for letter in dead)
