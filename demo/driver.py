"""`make demo`: start the embedded stack, the bank's services and the partner's, align the two
parties' people by PSI, replay synthetic events end to end, answer offers as the channels would,
and report what happened. Leaves nothing running."""
from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from demo.generator.channels import organic, respond
from demo.generator.partner_feed import partner_records
from demo.generator.population import SyntheticCustomer, customer_records, event_records, make_population, malformed_records
from demo.waiting import wait_profiles_stored
from services.campaigns.definitions import load_campaign_file
from services.campaigns.uplift import Uplift
from services.core.avro import AvroCodec, SchemaStore
from services.core.clients import consume, produce
from services.core.config import Settings, load_settings
from services.core.dead_letter import DeadLetter
from services.core.kafka import create_topics, now_ms, stage_group_id
from services.core.runtime import embedded_stack
from services.core.supervisor import ServiceRunner
from services.core.topic_names import dlq_name
from services.core.waiting import wait_committed_to_end, wait_until
from services.dispatch.admin import uplift_reports
from services.protocol.bank_keys import BankKeys, parse_partial_score
from services.protocol.catalog import CHANNELS, all_topic_names, offers_topic
from services.protocol.stream_messages import CustomerScores, Offer, Suppression
from services.reporting.tallies import campaign_totals

DEMO_DAY = __import__("datetime").date(2026, 11, 25)


@dataclass
class DemoSummary:
    customers: int = 0
    partner_people: int = 0
    shared_people: int = 0
    aligned: int = 0
    alignment_s: float = 0.0
    federated_product: str = ""
    federated_rows: int = 0
    federated_s: float = 0.0
    federated_service_number: str = ""
    scores_with_partner: int = 0
    events_sent: int = 0
    malformed_sent: int = 0
    scored: int = 0
    offers_by_channel: Counter[str] = field(default_factory=Counter)
    suppressed_by_reason: Counter[str] = field(default_factory=Counter)
    dead_letters_by_reason: Counter[str] = field(default_factory=Counter)
    responses_by_outcome: Counter[str] = field(default_factory=Counter)
    service_numbers: set[str] = field(default_factory=set)
    latencies_ms: list[float] = field(default_factory=list)
    uplift: list[Uplift] = field(default_factory=list)
    # The reporting service's table: {campaign: {day: {counter: n, conversion_rate}}}
    campaign_report: dict = field(default_factory=dict)  # type: ignore[type-arg]
    duration_s: float = 0.0

    @property
    def decided(self) -> int:
        return sum(self.offers_by_channel.values()) + sum(self.suppressed_by_reason.values())

    def latency_ms(self, quantile: float) -> float:
        return float(np.quantile(self.latencies_ms, quantile)) if self.latencies_ms else float("nan")

    @property
    def complete(self) -> bool:
        return (self.scored >= self.events_sent and self.decided >= self.events_sent
                and sum(self.dead_letters_by_reason.values()) >= self.malformed_sent)


def run_demo(work_dir: Path, *, customers: int = 1000, events: int = 3000, malformed: int = 30,
             rate_per_s: float = 500.0, timeout_s: float = 180.0, quiet_hours: bool = True,
             on_ready: Callable[[ServiceRunner], None] | None = None,
             before_stop: Callable[[ServiceRunner], None] | None = None) -> DemoSummary:
    """Run the whole pipeline once on the embedded parts and return what happened.

    `on_ready` runs once every service is ready, `before_stop` after the run while they still serve
    (the dashboard test starts Prometheus in one and queries it in the other)."""
    with embedded_stack(work_dir) as stack:
        settings = load_settings(
            kafka_bootstrap_servers=stack.env.get("KAFKA_BOOTSTRAP_SERVERS") or _from_env("KAFKA_BOOTSTRAP_SERVERS"),
            redis_url=stack.env.get("REDIS_URL") or _from_env("REDIS_URL"),
            database_url=stack.env.get("DATABASE_URL") or _from_env("DATABASE_URL"),
            data_dir=work_dir / "data", topic_prefix=f"demo{int(time.time())}.", redis_key_prefix=f"demo{int(time.time())}:",
            topic_partitions=4, model_refresh_s=1.0, quiet_hours=quiet_hours,
        )
        asyncio.run(create_topics(settings.kafka_bootstrap_servers, all_topic_names(settings), settings.topic_partitions))
        runner = ServiceRunner(settings, work_dir / "logs")
        try:
            runner.start_both_parties()
            if on_ready is not None:
                on_ready(runner)
            summary = asyncio.run(_drive(settings, customers, events, malformed, rate_per_s, timeout_s))
            summary.campaign_report = _campaign_report(runner.ports["reporting"], summary.decided)
            if before_stop is not None:
                before_stop(runner)
            return summary
        finally:
            runner.stop_all()


def _campaign_report(port: int, decided: int, timeout_s: float = 30.0) -> dict:  # type: ignore[type-arg]
    """The reporting service's campaign report, once it has counted every decision the demo saw."""
    deadline = time.monotonic() + timeout_s
    report: dict = {}  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/campaigns/report", timeout=5) as answer:  # nosec B310  # a fixed http:// URL on loopback
            report = json.loads(answer.read())["campaigns"]
        counted = sum(totals["offered"] + totals["suppressed"] for totals in campaign_totals(report).values())
        if counted >= decided:
            break
        time.sleep(0.5)
    return report


async def _align(settings: Settings, population: list, summary: DemoSummary,  # type: ignore[type-arg]
                 timeout_s: float = 60.0) -> None:
    """Send the partner its feed and wait until PSI over the exchange topics has aligned everyone shared."""
    import json

    import redis.asyncio as aioredis

    # The partner's feed has broken records too; they land in dlq.partner.features.raw.
    feed = [*partner_records(population), (b"broken-1", b'{"partner_record_id": "P-x", "features": '),
            (b"broken-2", b'{"op": "upsert", "partner_record_id": "P-y"}')]
    partner_ids = {json.loads(value)["national_id"] for key, value in feed if not key.startswith(b"broken")}
    summary.partner_people = len(partner_ids)
    summary.shared_people = len(partner_ids & {customer.national_id for customer in population})
    started = time.monotonic()
    await produce(settings.kafka_bootstrap_servers, settings.topic("partner.features.raw"), feed)
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    keys = BankKeys(settings.redis_key_prefix)
    try:
        while time.monotonic() - started < timeout_s:
            summary.aligned = len([key async for key in redis.scan_iter(match=keys.join_pattern(), count=1000)])
            if summary.aligned >= summary.shared_people:
                break
            await asyncio.sleep(0.3)
    finally:
        await redis.aclose()
    summary.alignment_s = time.monotonic() - started


async def _train_federated(settings: Settings, population: list, summary: DemoSummary,  # type: ignore[type-arg]
                           product: str = "travel_insurance") -> None:
    """Train the federated model with the partner over the exchange topics, from the bank's pilot-campaign history,
    and wait until the partner's partial scores of the new version are stored for everyone aligned."""
    from demo.generator.history import campaign_history
    from services.exchange.admin import train_federated

    result = await train_federated(settings, product, campaign_history(population, product), epochs=3, batch_size=256)
    summary.federated_product, summary.federated_rows = product, result.rows
    summary.federated_s, summary.federated_service_number = result.seconds, result.version.service_number
    # Scoring loads the registry's federated halves again on its first batch once model_refresh_s has
    # passed since it last did: it last did at start-up and has scored nothing since (no event was
    # sent yet), so its first event is scored with this version. What it also needs is the partner's
    # half: partial scores of this version, which the partner pushes when training ends.
    await _wait_for_partial_scores(settings, result.version.model_name, result.version.parameters["partner_version"])


async def _wait_for_partial_scores(settings: Settings, model_name: str, partner_version: str,
                                   timeout_s: float = 60.0) -> None:
    """Wait until the exchange service has stored a partial score of `partner_version` for every
    aligned customer (the exchange's keys, services/protocol/bank_keys.py)."""
    import redis.asyncio as aioredis

    redis = aioredis.from_url(settings.redis_url.get_secret_value(), decode_responses=True)  # str values
    keys = BankKeys(settings.redis_key_prefix)
    current = 0
    try:
        join_keys = [key async for key in redis.scan_iter(match=keys.join_pattern(), count=1000)]
        join_ids = [str(join_id) for join_id in await redis.mget(join_keys) if join_id] if join_keys else []

        async def every_partial_score_current() -> bool:
            nonlocal current
            pipeline = redis.pipeline(transaction=False)
            for join_id in join_ids:
                pipeline.hget(keys.partial(join_id), model_name)
            versions = [parse_partial_score(str(value))[0] for value in await pipeline.execute() if value is not None]
            current = versions.count(partner_version)
            return current >= len(join_ids)

        await wait_until(every_partial_score_current, timeout_s,
                         lambda: f"the partner's partial scores of {partner_version} ({current} of {len(join_ids)} aligned)")
    finally:
        await redis.aclose()


def _from_env(name: str) -> str:
    import os

    return os.environ[name]


async def _drive(settings: Settings, customer_count: int, event_count: int, malformed_count: int,
                 rate_per_s: float, timeout_s: float) -> DemoSummary:
    codec = AvroCodec(SchemaStore(settings.schema_dir))
    summary = DemoSummary(customers=customer_count, malformed_sent=malformed_count)
    population = make_population(customer_count)
    by_id = {customer.customer_id: customer for customer in population}
    raw_topic = settings.topic("bank.events.raw")
    await produce(settings.kafka_bootstrap_servers, raw_topic, customer_records(population, now_ms()))
    # Count the profiles themselves: an end offset would also count transaction markers.
    await consume(settings.kafka_bootstrap_servers, [settings.topic("customer.profiles")],
                  until=lambda got: len(got) >= customer_count, timeout_s=60)
    await wait_profiles_stored(settings, list(by_id))
    await _align(settings, population, summary)
    await _train_federated(settings, population, summary)

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=2, enable_idempotence=settings.exactly_once)
    await producer.start()
    started = time.monotonic()
    stop_collecting = asyncio.Event()
    collector = asyncio.create_task(_collect(settings, codec, summary, producer, by_id, stop_collecting))
    try:
        events = list(event_records(population, event_count)) + list(malformed_records(malformed_count))
        events.sort(key=lambda record: hash(record[0]) % 997)  # spread malformed ones among the good
        summary.events_sent = event_count
        tick_s = 0.02
        per_tick = max(1, int(rate_per_s * tick_s))
        for start in range(0, len(events), per_tick):
            for key, value in events[start:start + per_tick]:
                await producer.send(raw_topic, value=value, key=key)
            await asyncio.sleep(max(0.0, started + (start + per_tick) / rate_per_s - time.monotonic()))
        await producer.flush()
        deadline = time.monotonic() + timeout_s
        while not summary.complete and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        # The collector answers the offers of the batch it is in, then stops; every answer is sent.
        stop_collecting.set()
        await collector
        await producer.flush()
        if summary.complete:  # else something is stuck, and the summary says so
            responses = [settings.topic("responses")]
            await wait_committed_to_end(settings.kafka_bootstrap_servers, {
                stage_group_id(settings, "scoring"): responses, stage_group_id(settings, "dispatch"): responses,
            }, timeout_s=30)
        with_holdout = [campaign for campaign in load_campaign_file(settings.campaigns_file).campaigns
                        if campaign.holdout_share > 0]
        summary.uplift = await uplift_reports(settings, with_holdout)
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        await producer.stop()
    summary.duration_s = time.monotonic() - started
    return summary


async def _collect(settings: Settings, codec: AvroCodec, summary: DemoSummary, producer: AIOKafkaProducer,
                   customers: dict[str, SyntheticCustomer], stop: asyncio.Event) -> None:
    """Count every output, and answer each offer as the bank's channel would, until `stop` is set."""
    offer_topics = {settings.topic(offers_topic(channel)): channel for channel in CHANNELS}
    scores_topic, suppressions_topic = settings.topic("scores"), settings.topic("suppressions")
    dlq_topic, responses_topic = settings.topic(dlq_name("bank.events.raw")), settings.topic("responses")
    products = {campaign.campaign_id: campaign.product
                for campaign in load_campaign_file(settings.campaigns_file).campaigns}
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        topics = [*offer_topics, scores_topic, suppressions_topic, dlq_topic]
        consumer.assign([TopicPartition(topic, p) for topic in topics for p in range(settings.topic_partitions)])
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=2000)
            for records in batches.values():
                for record in records:
                    if record.topic == scores_topic:
                        summary.scored += 1
                        summary.scores_with_partner += any(
                            score.partner_contributed for score in codec.decode(record.value, CustomerScores).scores)
                    elif record.topic in offer_topics:
                        offer = codec.decode(record.value, Offer)
                        summary.offers_by_channel[offer.channel] += 1
                        summary.service_numbers.add(offer.service_number)
                        summary.latencies_ms.append(record.timestamp - offer.received_at_ms)
                        for response in respond(offer, customers[offer.customer_id], now_ms(), DEMO_DAY):
                            summary.responses_by_outcome[response.outcome] += 1
                            await producer.send(responses_topic, key=offer.customer_id.encode(), value=codec.encode(response))
                    elif record.topic == suppressions_topic:
                        suppression = codec.decode(record.value, Suppression)
                        summary.suppressed_by_reason[suppression.reason] += 1
                        for response in organic(suppression, customers[suppression.customer_id], products,
                                                now_ms(), DEMO_DAY):
                            summary.responses_by_outcome["converted (holdout, on their own)"] += 1
                            await producer.send(responses_topic, key=suppression.customer_id.encode(),
                                                value=codec.encode(response))
                    elif record.topic == dlq_topic:
                        summary.dead_letters_by_reason[codec.decode(record.value, DeadLetter).reason] += 1
    finally:
        await consumer.stop()
