"""Events through ingest, scoring and dispatch as real processes on the real broker and Redis."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from demo.driver import run_demo
from demo.waiting import wait_profiles_stored
from services.core.avro import AvroCodec
from services.core.clients import consume, produce
from services.core.config import Settings
from services.core.dead_letter import DeadLetter
from services.protocol.catalog import CHANNELS, offers_topic
from services.protocol.stream_messages import Offer, Suppression
from services.reporting.tallies import campaign_totals
from tests.samples import customer_row as _customer
from tests.samples import transaction_row as _transaction


@pytest.mark.tansu_smoke
async def test_events_become_offers_suppressions_and_dead_letters(settings: Settings, services, codec: AvroCodec) -> None:
    for name in ("ingest", "scoring", "dispatch"):
        services.start(name, wait=False)
    services.wait_all_ready()
    raw = settings.topic("bank.events.raw")
    await produce(settings.kafka_bootstrap_servers, raw, [
        (b"A", _customer("A", "young_professional", "push")),
        (b"B", _customer("B", "family", "sms", consent=False)),
        (b"T", _customer("T", "affluent", "wechat")),
    ])
    await consume(settings.kafka_bootstrap_servers, [settings.topic("customer.profiles")],
                  until=lambda got: len(got) >= 3, timeout_s=20)
    await wait_profiles_stored(settings, ["A", "B", "T"])  # else the transactions meet no profile: no consent
    await produce(settings.kafka_bootstrap_servers, raw, [
        (b"A", _transaction("1", "A", "salary", "30000.00")),        # offer: wealth fund on push
        (b"A", _transaction("2", "A", "salary", "30000.00")),        # same day again: frequency cap
        (b"B", _transaction("3", "B", "salary", "30000.00")),        # no consent
        (b"T", _transaction("4", "T", "card", "880.00", "JP")),      # abroad: travel insurance on wechat
        (b"X", b'{"op": "c", "source": {"table": "transactions"'),   # malformed
    ])
    offer_topics = [settings.topic(offers_topic(channel)) for channel in CHANNELS]
    suppressions, dlq = settings.topic("suppressions"), settings.topic("dlq.bank.events.raw")
    records = await consume(settings.kafka_bootstrap_servers, [*offer_topics, suppressions, dlq],
                            until=lambda got: len(got) >= 5, timeout_s=40)
    offers = {codec.decode(r.value, Offer).customer_id: (r.topic, codec.decode(r.value, Offer))
              for r in records if r.topic in offer_topics}
    suppressed = sorted((codec.decode(r.value, Suppression).customer_id, codec.decode(r.value, Suppression).reason)
                        for r in records if r.topic == suppressions)
    dead = [codec.decode(r.value, DeadLetter) for r in records if r.topic == dlq]

    topic_a, offer_a = offers["A"]
    assert topic_a == settings.topic("offers.push")
    assert (offer_a.campaign_id, offer_a.product, offer_a.trigger) == ("salary_day_wealth_fund", "wealth_fund", "salary_credit")
    # Nothing was trained from history here: the fallback served, and the offer says so.
    assert offer_a.service_number.startswith("CS-PROPENSITY.WEALTH_FUND.FALLBACK-v")
    assert [reason.feature for reason in offer_a.reasons] == ["no_model_yet"]
    topic_t, offer_t = offers["T"]
    assert topic_t == settings.topic("offers.wechat") and offer_t.campaign_id == "travel_card_abroad"
    assert suppressed == [("A", "frequency_cap"), ("B", "no_consent")]
    assert len(dead) == 1 and dead[0].reason == "bad_json" and dead[0].value.startswith(b'{"op"')


def test_demo_accounts_for_every_event_and_stops_everything(tmp_path: Path) -> None:
    summary = run_demo(tmp_path, customers=150, events=300, malformed=6, rate_per_s=300, timeout_s=90, quiet_hours=False)
    assert summary.complete
    assert summary.scored == 300 and summary.decided == 300
    assert sum(summary.dead_letters_by_reason.values()) == 6
    assert sum(summary.offers_by_channel.values()) > 0 and summary.latencies_ms
    assert summary.responses_by_outcome["delivered"] == sum(summary.offers_by_channel.values())
    # The reporting service's faust table counted the same decisions as the demo read off the topics.
    reported = sum(campaign_totals(summary.campaign_report).values(), Counter())
    assert {channel: reported[f"offered:{channel}"] for channel in summary.offers_by_channel} == summary.offers_by_channel
    assert reported["suppressed"] == sum(summary.suppressed_by_reason.values())
