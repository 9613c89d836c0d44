"""`make demo`: start the embedded stack, train every product's bank-only model from a generated
campaign-response history, start the bank's services and the partner's, align the two parties'
people by PSI, train every product's federated model from the same history, replay synthetic
events end to end, answer offers as the channels would, and report what happened, which models
served and how their propensities spread. Leaves nothing running."""
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
from demo.generator.history import campaign_contacts
from demo.generator.partner_feed import partner_records
from demo.generator.population import SyntheticCustomer, customer_records, event_records, make_population, malformed_records
from demo.waiting import wait_aligned, wait_profiles_stored
from services.bootstrap import BootstrapReport, History, history_from_file, train_bank_models_from, train_federated_models
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
from services.core.waiting import wait_committed_to_end
from services.dispatch.admin import uplift_reports
from services.models.history import write_history
from services.models.registry import ModelRegistry
from services.protocol.catalog import CHANNELS, all_topic_names, offers_topic
from services.protocol.stream_messages import CustomerScores, Offer, Suppression
from services.reporting.tallies import campaign_totals
from services.scoring.admin import wait_learned_to_end

DEMO_DAY = __import__("datetime").date(2026, 11, 25)


@dataclass(frozen=True)
class ServedModel:
    """A model version that scored events in the run, as the registry records it."""

    product: str
    model_version: str  # the label scores carry, e.g. propensity.credit_card@v3
    service_number: str
    algorithm: str
    rows_learned: int
    holdout_auc: float | None  # its own, or that of the version it was trained as (its lineage)
    scores: int


@dataclass
class DemoSummary:
    customers: int = 0
    partner_people: int = 0
    shared_people: int = 0
    aligned: int = 0
    alignment_s: float = 0.0
    bootstrap: BootstrapReport | None = None
    bootstrap_s: float = 0.0
    served: list[ServedModel] = field(default_factory=list)
    # Every score's propensity per product, and which version gave it: (product, label, service number) -> count.
    propensities: dict[str, list[float]] = field(default_factory=dict)
    scored_by: Counter[tuple[str, str, str]] = field(default_factory=Counter)
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
        population = make_population(customers)
        # The bank's history, exported as a real deployment's would be, and every product's
        # bank-only model trained from it before scoring starts (and loads them).
        history_path = work_dir / "history" / "campaign-responses.csv"
        write_history(history_path, campaign_contacts(population))
        started = time.monotonic()
        history = history_from_file(history_path)
        report = train_bank_models_from(settings, history)
        bootstrap_s = time.monotonic() - started
        runner = ServiceRunner(settings, work_dir / "logs")
        try:
            runner.start_both_parties()
            if on_ready is not None:
                on_ready(runner)
            summary = asyncio.run(_drive(settings, population, history, report, events, malformed, rate_per_s,
                                         timeout_s))
            summary.bootstrap_s += bootstrap_s
            summary.served = _served_models(settings, summary)
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


async def _align(settings: Settings, population: list[SyntheticCustomer], summary: DemoSummary) -> None:
    """Send the partner its feed and wait until PSI over the exchange topics has aligned everyone shared."""
    # The partner's feed has broken records too; they land in dlq.partner.features.raw.
    feed = [*partner_records(population), (b"broken-1", b'{"partner_record_id": "P-x", "features": '),
            (b"broken-2", b'{"op": "upsert", "partner_record_id": "P-y"}')]
    partner_ids = {json.loads(value)["national_id"] for key, value in feed if not key.startswith(b"broken")}
    summary.partner_people = len(partner_ids)
    summary.shared_people = len(partner_ids & {customer.national_id for customer in population})
    started = time.monotonic()
    await produce(settings.kafka_bootstrap_servers, settings.topic("partner.features.raw"), feed)
    summary.aligned = await wait_aligned(settings, summary.shared_people, timeout_s=60)
    summary.alignment_s = time.monotonic() - started


def _served_models(settings: Settings, summary: DemoSummary) -> list[ServedModel]:
    """Each version that scored events, with its algorithm, rows and holdout AUC from the registry."""
    federated_auc = {entry.version.service_number: entry.holdout_auc
                     for entry in (summary.bootstrap.federated if summary.bootstrap else []) if entry.version}
    registry = ModelRegistry(settings.database_url.get_secret_value())
    served = []
    try:
        for (product, label, service_number), count in sorted(summary.scored_by.items()):
            version = registry.version(service_number)
            if version is None:
                continue
            auc = federated_auc.get(service_number, version.metrics.get("auc_holdout"))
            ancestor = version
            while auc is None and ancestor.parent_service_number:  # scoring's start version: its parent was trained
                parent = registry.version(ancestor.parent_service_number)
                if parent is None:
                    break
                ancestor, auc = parent, parent.metrics.get("auc_holdout")
            served.append(ServedModel(product, label, service_number, version.algorithm, version.rows_learned, auc, count))
    finally:
        registry.close()
    return served


def _from_env(name: str) -> str:
    import os

    return os.environ[name]


async def _drive(settings: Settings, population: list[SyntheticCustomer], history: History, report: BootstrapReport,
                 event_count: int, malformed_count: int, rate_per_s: float, timeout_s: float) -> DemoSummary:
    codec = AvroCodec(SchemaStore(settings.schema_dir))
    summary = DemoSummary(customers=len(population), malformed_sent=malformed_count, bootstrap=report)
    by_id = {customer.customer_id: customer for customer in population}
    raw_topic = settings.topic("bank.events.raw")
    await produce(settings.kafka_bootstrap_servers, raw_topic, customer_records(population, now_ms()))
    # Count the profiles themselves: an end offset would also count transaction markers.
    await consume(settings.kafka_bootstrap_servers, [settings.topic("customer.profiles")],
                  until=lambda got: len(got) >= len(population), timeout_s=60)
    await wait_profiles_stored(settings, list(by_id))
    await _align(settings, population, summary)
    # Every product's federated model, trained with the partner over the exchange topics from the
    # same history; it returns once the partner's partial scores of each new version are stored.
    # Scoring loads the new halves on its first batch once model_refresh_s (1 s here) has passed.
    started = time.monotonic()
    await train_federated_models(settings, history, report)
    summary.bootstrap_s = time.monotonic() - started

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
            await wait_committed_to_end(settings.kafka_bootstrap_servers, {
                stage_group_id(settings, "dispatch"): [settings.topic("responses")]}, timeout_s=30)
            await wait_learned_to_end(settings, timeout_s=60)
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
                        scores = codec.decode(record.value, CustomerScores).scores
                        summary.scores_with_partner += any(score.partner_contributed for score in scores)
                        for score in scores:
                            summary.propensities.setdefault(score.product, []).append(score.propensity)
                            summary.scored_by[(score.product, score.model_version, score.service_number)] += 1
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
