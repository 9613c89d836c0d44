"""A bank channel with no Cipherstream code reads offers.<channel>: a plain confluent-kafka consumer,
fastavro and the .avsc file only (strip the 5-byte Confluent header, decode the body)."""
from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import fastavro
from confluent_kafka import Consumer

from services.core.avro import AvroCodec
from services.core.clients import produce
from services.core.config import Settings
from services.protocol.stream_messages import ProductScore, ReasonCode
from tests.dispatch.test_contact_policy import _scores

OFFER_SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "offer.avsc"


async def test_plain_kafka_consumer_reads_offers_with_campaign_service_number_and_reasons(
    settings: Settings, services, codec: AvroCodec,
) -> None:
    services.start("dispatch")
    card = ProductScore("credit_card", 0.4, "propensity.credit_card@v3", "CS-PROPENSITY.CREDIT_CARD-v3-ab", False,
                        (ReasonCode("age", 0.2),))
    scores = dataclasses.replace(_scores("e-plain", customer_id="A1"), scores=(card,))
    await produce(settings.kafka_bootstrap_servers, settings.topic("scores"), [(b"A1", codec.encode(scores))])

    schema = fastavro.parse_schema(json.loads(OFFER_SCHEMA.read_text()))
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "bank-push-channel",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([settings.topic("offers.push")])
    try:
        offer = None
        for _ in range(120):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                value = message.value()
                assert value[0] == 0  # Confluent wire format: magic byte, then a 4-byte schema id
                offer = fastavro.schemaless_reader(io.BytesIO(value[5:]), schema)
                break
    finally:
        consumer.close()
    assert offer is not None, "no offer reached offers.push"
    assert offer["campaign_id"] == "credit_card_upgrade" and offer["customer_id"] == "A1"
    assert offer["service_number"] == "CS-PROPENSITY.CREDIT_CARD-v3-ab" and offer["reasons"][0]["feature"] == "age"
