"""`cipherstream generate`: a synthetic population onto the bank's and the partner's input topics."""
from __future__ import annotations

import time
from dataclasses import dataclass

from demo.generator.partner_feed import partner_records
from demo.generator.population import customer_records, event_records, make_population
from services.core.clients import produce
from services.core.config import Settings


@dataclass(frozen=True)
class Published:
    bank_topic: str
    bank_records: int  # the customers' CDC rows, then their events
    partner_topic: str
    partner_records: int


async def publish_synthetic(settings: Settings, customers: int, events: int, seed: int) -> Published:
    """Customers and `events` of their events to bank.events.raw, the partner's feed of the same
    people to partner.features.raw (on KAFKA_BOOTSTRAP_SERVERS); the same seed, the same people."""
    population = make_population(customers, seed)
    bank_topic = settings.topic("bank.events.raw")
    now_ms = int(time.time() * 1000)
    sent = await produce(settings.kafka_bootstrap_servers, bank_topic, customer_records(population, now_ms))
    sent += await produce(settings.kafka_bootstrap_servers, bank_topic, event_records(population, events, seed + 1))
    partner_topic = settings.topic("partner.features.raw")
    partner_sent = await produce(settings.kafka_bootstrap_servers, partner_topic, partner_records(population))
    return Published(bank_topic, sent, partner_topic, partner_sent)
