"""Style types through scoring and dispatch as real processes on the real broker and Redis: once
the segmenter is warm every score carries a style type, and a campaign for one style type offers
to the customers scoring put in it and to nobody else."""
from __future__ import annotations

import os
import random
import time
from pathlib import Path

import yaml

from demo.generator.history import profile_of
from demo.generator.population import make_population
from demo.waiting import wait_profiles_stored
from services.core.avro import AvroCodec
from services.core.clients import consume, produce
from services.core.config import Settings
from services.core.supervisor import ServiceRunner
from services.core.waiting import wait_until
from services.protocol.catalog import CHANNELS, offers_topic
from services.protocol.stream_messages import CustomerEvent, CustomerScores, Offer, Suppression

WARM_UP_EVENTS = 600
QUIET_TRIGGERS = ("deposit", "card_spend", "transfer_out", "app_login", "card_spend_abroad")  # no campaign below fires


def _campaigns(style_types: list[int]) -> str:
    return yaml.safe_dump({"campaigns": [{
        "campaign_id": "one_style_only", "product": "credit_card", "value": 10, "triggers": ["salary_credit"],
        "channels": [{"channel": "push", "template": "For your style: {product}"}],
        "eligibility": {"style_types": style_types, "min_age": 18},
    }]})


def _reloads(log_dir: Path) -> int:
    """How often dispatch has reloaded its campaigns (its log says so each time)."""
    return sum(text.count("campaigns reloaded") for text in (path.read_text() for path in log_dir.glob("dispatch*.log")))


def _event(event_id: str, customer_id: str, event_type: str, at_ms: int) -> CustomerEvent:
    return CustomerEvent(event_id, customer_id, event_type, 250_000, "CNY", "CN", at_ms, at_ms,  # type: ignore[arg-type]
                         "bank.events.raw", 0, 0)


async def test_scores_carry_style_types_and_a_campaign_for_one_type_offers_only_to_it(
    settings: Settings, topics: list[str], tmp_path: Path, codec: AvroCodec,
) -> None:
    campaigns_file = tmp_path / "campaigns.yaml"
    campaigns_file.write_text(_campaigns([999]))  # nobody yet
    settings = settings.model_copy(update={"campaigns_file": campaigns_file, "campaign_refresh_s": 1.0})
    runner = ServiceRunner(settings, tmp_path / "logs")
    try:
        for name in ("scoring", "dispatch"):
            runner.start(name, wait=False)
        runner.wait_all_ready()
        customers = [customer for customer in make_population(300, seed=21) if customer.consent_marketing]
        profiles = [profile_of(customer) for customer in customers]
        await produce(settings.kafka_bootstrap_servers, settings.topic("customer.profiles"),
                      [(profile.customer_id.encode(), codec.encode(profile)) for profile in profiles])
        await wait_profiles_stored(settings, [profile.customer_id for profile in profiles], timeout_s=60)

        rng, now_ms = random.Random(3), int(time.time() * 1000)
        warm_up = [_event(f"w{index}", rng.choice(customers).customer_id, rng.choice(QUIET_TRIGGERS), now_ms)
                   for index in range(WARM_UP_EVENTS)]
        await produce(settings.kafka_bootstrap_servers, settings.topic("customer.events"),
                      [(event.customer_id.encode(), codec.encode(event)) for event in warm_up])
        scored = [codec.decode(record.value, CustomerScores) for record in await consume(
            settings.kafka_bootstrap_servers, [settings.topic("scores")], until=lambda got: len(got) >= WARM_UP_EVENTS,
            timeout_s=120)]
        assert len(scored) == WARM_UP_EVENTS
        placed = [scores for scores in scored if scores.style_type_id >= 0]
        assert len(placed) >= WARM_UP_EVENTS - 300  # all but those scored before the warm-up was over
        names = {(scores.style_type_id, scores.style_type_name) for scores in placed}
        assert len({style_id for style_id, _ in names}) >= 2 and all(name != "unassigned" for _, name in names)

        latest = {scores.customer_id: scores.style_type_id for scores in placed}
        chosen = max(set(latest.values()), key=list(latest.values()).count)
        reloads_before = _reloads(runner.log_dir)
        campaigns_file.write_text(_campaigns([chosen]))
        os.utime(campaigns_file, ns=(time.time_ns(), time.time_ns() + 1_000_000))
        await wait_until(lambda: _reloads(runner.log_dir) > reloads_before, 30,
                         lambda: f"dispatch to reload its campaigns (style_types [{chosen}])")

        no_card = {customer.customer_id for customer in customers if "credit_card" not in customer.products}
        inside = [c for c, style_id in latest.items() if style_id == chosen and c in no_card][:6]
        outside = [c for c, style_id in latest.items() if style_id != chosen and c in no_card][:6]
        assert inside and outside
        finals = [_event(f"s{index}", customer, "salary_credit", now_ms) for index, customer in enumerate(inside + outside)]
        await produce(settings.kafka_bootstrap_servers, settings.topic("customer.events"),
                      [(event.customer_id.encode(), codec.encode(event)) for event in finals])
        offer_topics = [settings.topic(offers_topic(channel)) for channel in CHANNELS]
        kinds = {settings.topic("scores"): CustomerScores, settings.topic("suppressions"): Suppression,
                 **{topic: Offer for topic in offer_topics}}

        def finals_only(records: list) -> list[CustomerScores | Offer | Suppression]:  # type: ignore[type-arg]
            decoded = (codec.decode(record.value, kinds[record.topic]) for record in records)
            return [message for message in decoded if message.event_id.startswith("s")]  # type: ignore[attr-defined]

        records = finals_only(await consume(settings.kafka_bootstrap_servers, list(kinds),
                                            until=lambda got: len(finals_only(got)) >= 2 * len(finals), timeout_s=90))
        final_scores = {m.event_id: m for m in records if isinstance(m, CustomerScores)}
        offered = {m.event_id for m in records if isinstance(m, Offer)}
        suppressed = {(m.event_id, m.reason) for m in records if isinstance(m, Suppression)}
        assert len(final_scores) == len(finals)
        for event_id, scores in final_scores.items():
            if scores.style_type_id == chosen:  # the type the score carries decides, as scoring placed them now
                assert event_id in offered, (event_id, scores.style_type_id)
            else:
                assert (event_id, "no_eligible_campaign") in suppressed, (event_id, scores.style_type_id)
        assert offered and len(offered) < len(finals)
    finally:
        runner.stop_all()
