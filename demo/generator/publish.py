"""`cipherstream generate`: a synthetic population onto the bank's and the partner's input topics."""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass

from demo.generator.partner_feed import partner_records
from demo.generator.population import SyntheticCustomer, customer_records, event_records, make_population
from services.core.clients import produce
from services.core.config import Settings


@dataclass(frozen=True)
class Published:
    bank_topic: str
    bank_records: int  # the customers' CDC rows, then their events
    partner_topic: str
    partner_records: int
    shared_people: int  # bank customers the partner's feed also holds: what PSI will align


async def publish_population(settings: Settings, population: list[SyntheticCustomer]) -> Published:
    """The customers' CDC rows to bank.events.raw and the partner's feed of the same people (and
    others) to partner.features.raw, on KAFKA_BOOTSTRAP_SERVERS."""
    bank_topic = settings.topic("bank.events.raw")
    sent = await produce(settings.kafka_bootstrap_servers, bank_topic, customer_records(population, int(time.time() * 1000)))
    feed = list(partner_records(population))
    partner_topic = settings.topic("partner.features.raw")
    partner_sent = await produce(settings.kafka_bootstrap_servers, partner_topic, feed)
    shared = {json.loads(value)["national_id"] for _, value in feed} & {customer.national_id for customer in population}
    return Published(bank_topic, sent, partner_topic, partner_sent, len(shared))


async def publish_synthetic(settings: Settings, customers: int, events: int, seed: int) -> Published:
    """`publish_population`, then `events` of their events to bank.events.raw; the same seed, the
    same people."""
    population = make_population(customers, seed)
    published = await publish_population(settings, population)
    sent = await produce(settings.kafka_bootstrap_servers, published.bank_topic,
                         event_records(population, events, seed + 1))
    return dataclasses.replace(published, bank_records=published.bank_records + sent)
