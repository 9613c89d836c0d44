"""Bad input never crashes a service and never vanishes: every malformed record is refused with
a reason (unit level, by property), and every one lands in its topic's dead-letter topic while
the services keep serving (process level)."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from demo.waiting import wait_profiles_stored
from services.core.avro import AvroCodec
from services.core.clients import consume, produce
from services.core.config import Settings
from services.core.dead_letter import DeadLetter
from services.core.errors import MessageError
from services.ingest.cdc import normalise, parse_cdc
from services.partner.features import parse_feed
from services.protocol.stream_messages import (
    CustomerEvent,
    CustomerIdentity,
    CustomerScores,
    ExchangeMessage,
    Offer,
    OfferResponse,
    Suppression,
)
from tests.faults.malformed import malformed_avro, malformed_cdc, malformed_exchange, malformed_partner_feed
from tests.samples import customer_row, transaction_row

READERS = {"responses": ("scoring", "dispatch", "reporting")}  # topics more than one service consumes
AVRO_INPUTS = {"customer.events": CustomerEvent, "scores": CustomerScores, "responses": OfferResponse,
               "customer.identities": CustomerIdentity, "exchange.to_bank": ExchangeMessage,
               "exchange.to_partner": ExchangeMessage, "offers.email": Offer, "suppressions": Suppression}


@hypothesis_settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed_cdc())
def test_malformed_cdc_is_refused_with_a_reason_never_an_exception(raw: bytes) -> None:
    with pytest.raises(MessageError) as raised:
        normalise(parse_cdc(raw), source_topic="t", source_partition=0, source_offset=0, received_at_ms=0, home_country="CN")
    assert raised.value.reason and raised.value.detail


@hypothesis_settings(max_examples=300, deadline=None)
@given(malformed_partner_feed())
def test_malformed_partner_feed_is_refused_with_a_reason_never_an_exception(raw: bytes) -> None:
    with pytest.raises(MessageError) as raised:
        parse_feed(raw)
    assert raised.value.reason and raised.value.detail


@pytest.mark.parametrize("topic, message_type", AVRO_INPUTS.items())
def test_malformed_avro_is_refused_with_a_reason_never_an_exception(codec: AvroCodec, topic: str, message_type: type) -> None:
    @hypothesis_settings(max_examples=200, deadline=None)
    @given(malformed_avro(codec, message_type.SCHEMA))
    def refused(raw: bytes) -> None:
        with pytest.raises(MessageError) as raised:
            codec.decode(raw, message_type)
        assert raised.value.reason

    refused()


def _samples(strategy: st.SearchStrategy[bytes], count: int) -> list[bytes]:
    found: list[bytes] = []

    @hypothesis_settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(raw: bytes) -> None:
        found.append(raw)

    collect()
    return found[:count]


async def test_every_malformed_record_on_every_input_topic_lands_in_its_dlq_and_services_keep_serving(
    settings: Settings, services, codec: AvroCodec,
) -> None:
    for name in ("ingest", "scoring", "dispatch", "exchange", "reporting", "partner"):
        services.start(name, wait=False)
    services.wait_all_ready()
    bad = {"bank.events.raw": _samples(malformed_cdc(), 60), "partner.features.raw": _samples(malformed_partner_feed(), 40)}
    bad |= {topic: _samples(malformed_avro(codec, message_type.SCHEMA), 40) for topic, message_type in AVRO_INPUTS.items()}
    bad["exchange.to_bank"] += _samples(malformed_exchange(codec, "partner"), 30)
    bad["exchange.to_partner"] += _samples(malformed_exchange(codec, "bank"), 30)
    for topic, records in bad.items():
        await produce(settings.kafka_bootstrap_servers, settings.topic(topic),
                      [(f"k{index}".encode(), raw) for index, raw in enumerate(records)])
    expected = sum(len(records) * len(READERS.get(topic, ("one",))) for topic, records in bad.items())
    dlq_topics = [settings.topic(f"dlq.{topic}") for topic in bad]
    letters = await consume(settings.kafka_bootstrap_servers, dlq_topics, until=lambda got: len(got) >= expected, timeout_s=60)
    by_reader: dict[tuple[str, str], list[DeadLetter]] = {}
    for record in letters:
        letter = codec.decode(record.value, DeadLetter)
        by_reader.setdefault((letter.topic, letter.service), []).append(letter)
    for topic, records in bad.items():
        # Every service that reads the topic refuses every malformed record, each in the DLQ once.
        readers = [(t, service) for t, service in by_reader if t == topic]
        assert len(readers) == len(READERS.get(topic, ("one",))), f"{topic}: dead letters from {readers}"
        for reader in readers:
            kept = sorted(letter.value or b"" for letter in by_reader[reader])
            assert kept == sorted(records), f"{reader}: {len(kept)} of {len(records)} malformed records in the DLQ"
            assert all(letter.reason and letter.error_type for letter in by_reader[reader])
    assert all(managed.process.poll() is None for managed in services.running.values()), "a service crashed"

    await produce(settings.kafka_bootstrap_servers, settings.topic("bank.events.raw"),
                  [(b"A", customer_row("A", "young_professional", "push"))])
    await wait_profiles_stored(settings, ["A"])  # a good profile is still stored after all that garbage
    await produce(settings.kafka_bootstrap_servers, settings.topic("bank.events.raw"),
                  [(b"A", transaction_row("ok1", "A", "salary", "30000.00"))])
    # The scores topic also holds the garbage injected above as dispatch's input: find the real one.
    def scored_ok(records: list) -> bool:  # type: ignore[type-arg]
        return any(record.value and record.value[:1] == b"\x00" and _event_id(codec, record.value) == "transactions:ok1"
                   for record in records)
    scores = await consume(settings.kafka_bootstrap_servers, [settings.topic("scores")], until=scored_ok, timeout_s=20)
    assert scored_ok(scores)


def _event_id(codec: AvroCodec, value: bytes) -> str | None:
    try:
        return codec.decode(value, CustomerScores).event_id
    except MessageError:
        return None
