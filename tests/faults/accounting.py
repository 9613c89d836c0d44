"""What the fault suite shares: the pipeline started with its customers loaded, a steady stream of
events, and what it checks after every fault: each event was scored and then decided (an offer, or
a suppression that says why not); no offer twice."""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from demo.generator.population import SyntheticCustomer, customer_records, make_population
from demo.waiting import wait_profiles_stored
from services.core.avro import AvroCodec
from services.core.clients import Record, consume, idempotence_available, produce
from services.core.config import Settings
from services.core.supervisor import ServiceRunner
from services.protocol.catalog import CHANNELS, offers_topic
from services.protocol.stream_messages import CustomerScores, Offer, Suppression

STAGES = ("ingest", "scoring", "dispatch")


async def start_pipeline(runner: ServiceRunner, customers: int) -> list[SyntheticCustomer]:
    """Start ingest, scoring and dispatch, load `customers` profiles through them and wait until
    scoring has stored them, so the events that follow find their customer."""
    for name in STAGES:
        runner.start(name, wait=False)
    runner.wait_all_ready()
    settings = runner.settings
    population = make_population(customers)
    await produce(settings.kafka_bootstrap_servers, settings.topic("bank.events.raw"),
                  customer_records(population, int(time.time() * 1000)))
    await consume(settings.kafka_bootstrap_servers, [settings.topic("customer.profiles")],
                  until=lambda got: len(got) >= customers, timeout_s=30)
    await wait_profiles_stored(settings, [customer.customer_id for customer in population])
    return population


def expected_event_ids(events: list[tuple[bytes, bytes]], seed: int) -> set[str]:
    """The event ids `event_records(..., seed=seed)` gave these records, as scores carry them."""
    return {f"transactions:T{seed}-{index}" if b'"transactions"' in value else f"logins:L{seed}-{index}"
            for index, (_, value) in enumerate(events)}


async def send_steadily(bootstrap_servers: str, topic: str, events: list[tuple[bytes, bytes]], rate_per_s: float) -> None:
    """Send at a fixed rate, as live traffic arrives; sends retry while the broker is away."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, enable_idempotence=idempotence_available(), acks="all",
                                request_timeout_ms=60_000, retry_backoff_ms=200)
    await producer.start()
    try:
        started = time.monotonic()
        for index, (key, value) in enumerate(events):
            await producer.send(topic, value=value, key=key)
            await asyncio.sleep(max(0.0, started + index / rate_per_s - time.monotonic()))
        await producer.flush()
    finally:
        await producer.stop()


@dataclass
class Outcome:
    records: list[Record]
    scored: set[str]
    decided: set[str]
    offers_per_id: Counter[str]
    scores_per_event: Counter[str]
    decisions_per_event: Counter[str]

    def sent_twice(self) -> list[str]:
        return [offer_id for offer_id, count in self.offers_per_id.items() if count > 1]

    def not_exactly_once(self, event_ids: set[str]) -> list[str]:
        """Events among these that were not scored exactly once and decided exactly once."""
        return sorted(event for event in event_ids
                      if self.scores_per_event[event] != 1 or self.decisions_per_event[event] != 1)


class PipelineLedger:
    """Reads the scores, offers and suppressions topics and says which events they account for."""

    def __init__(self, settings: Settings, codec: AvroCodec) -> None:
        self.settings = settings
        self.codec = codec
        self.scores_topic = settings.topic("scores")
        self.offer_topics = [settings.topic(offers_topic(channel)) for channel in CHANNELS]
        self.suppressions = settings.topic("suppressions")

    def outcome(self, records: list[Record]) -> Outcome:
        scores = Counter(self.codec.decode(r.value, CustomerScores).event_id for r in records if r.topic == self.scores_topic)
        decisions = Counter(self._decided_event(r) for r in records if r.topic != self.scores_topic)
        offers = Counter(self.codec.decode(r.value, Offer).offer_id for r in records if r.topic in self.offer_topics)
        return Outcome(records, set(scores), set(decisions), offers, scores, decisions)

    async def wait_accounted(self, expected: set[str], timeout_s: float) -> Outcome:
        """Read from the beginning until every expected event is scored and decided, or the timeout."""
        scored: set[str] = set()
        decided: set[str] = set()
        seen = 0

        def accounted(records: list[Record]) -> bool:  # incremental: called after every poll
            nonlocal seen
            part = self.outcome(records[seen:])
            seen = len(records)
            scored.update(part.scored)
            decided.update(part.decided)
            return expected <= scored and expected <= decided

        records = await consume(self.settings.kafka_bootstrap_servers,
                                [self.scores_topic, *self.offer_topics, self.suppressions],
                                until=accounted, timeout_s=timeout_s)
        return self.outcome(records)

    def _decided_event(self, record: Record) -> str:
        if record.topic == self.suppressions:
            return self.codec.decode(record.value, Suppression).event_id
        return self.codec.decode(record.value, Offer).event_id
