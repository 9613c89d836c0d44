"""Every topic of the catalog has its writer and its readers among the services' topics.py."""
from __future__ import annotations

import importlib
from collections import defaultdict

from services.core.topic_names import dlq_name
from services.protocol.catalog import TOPICS, TopicUse

SERVICES = ("ingest", "exchange", "scoring", "dispatch", "reporting", "partner", "console")
# Written from outside the services: the bank's core systems, its channels' responses, the partner's feed.
SOURCE_SYSTEM_TOPICS = {"bank.events.raw", "responses", "partner.features.raw"}
# Read outside the services: the bank's channel systems consume the offers; partner.features is the
# partner's compacted record of its validated feed, for its own systems.
READ_OUTSIDE = {name for name in TOPICS if name.startswith("offers.")} | {"partner.features"}


def uses() -> dict[str, list[tuple[str, TopicUse]]]:
    by_topic: dict[str, list[tuple[str, TopicUse]]] = defaultdict(list)
    for service in SERVICES:
        for use in importlib.import_module(f"services.{service}.topics").USES:
            by_topic[use.name].append((service, use))
    return by_topic


def test_every_topic_has_one_writer_and_a_reader() -> None:
    by_topic = uses()
    dead_letter_topics = {dlq_name(name) for name in TOPICS}
    for name in TOPICS:
        if name in dead_letter_topics:
            continue
        writers = {service for service, use in by_topic[name] if use.direction == "writes"}
        readers = {service for service, use in by_topic[name] if use.direction == "reads"}
        if name in SOURCE_SYSTEM_TOPICS:
            assert not writers, f"{name} is written by the source system, not by {writers}"
        else:
            assert len(writers) == 1, f"{name} written by {sorted(writers) or 'no service'}"
        assert readers or name in READ_OUTSIDE, f"{name} is read by no service"


def test_the_exchange_topics_are_the_only_ones_both_parties_touch() -> None:
    for name, services_using in uses().items():
        parties = {"partner" if service == "partner" else "bank" for service, _ in services_using}
        assert len(parties) == 1 or name.startswith("exchange."), f"{name} is used by {parties}"


def test_every_topic_a_service_reads_has_its_dead_letter_topic() -> None:
    for name, services_using in uses().items():
        if any(use.direction == "reads" for _, use in services_using):
            assert dlq_name(name) in TOPICS, f"{name} is read but {dlq_name(name)} is not in the catalog"
