"""Console campaigns as dispatch runs them: the SQL store on SQLite and PostgreSQL, the live catalog
(file plus console, reloaded on change), configurable arbitration, and a running dispatch service
whose new console campaign makes offers without a restart (the console's HTTP API: tests/console)."""
from __future__ import annotations

import datetime as dt
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from services.campaigns.catalog import CampaignCatalog
from services.campaigns.definitions import ArbitrationWeights, Campaign
from services.campaigns.store import CampaignStore
from services.core.avro import AvroCodec
from services.core.clients import consume, produce
from services.core.config import REPO_ROOT, Settings
from services.core.supervisor import ServiceRunner
from services.core.waiting import wait_until
from services.dispatch.arbitration import rank
from services.protocol.catalog import offers_topic
from services.protocol.stream_messages import CustomerScores, Offer, ProductScore, ReasonCode

CONSOLE_CAMPAIGN: dict[str, Any] = {
    "product": "wealth_fund", "value": 90, "priority": 2.0, "triggers": ["salary_credit"],
    "channels": [{"channel": "email", "template": "Console-made offer: {product}"}],
    "eligibility": {"min_age": 18, "exclude_holders": False},
}


def _campaign(campaign_id: str, value: float = 50, **extra: Any) -> Campaign:
    return Campaign.model_validate({**CONSOLE_CAMPAIGN, "campaign_id": campaign_id, "value": value, **extra})


def _scores(event_id: str, customer_id: str, *, segment: str = "affluent", channel: str = "push",
            event_type: str = "salary_credit", propensities: dict[str, float] | None = None) -> CustomerScores:
    now = int(time.time() * 1000)
    scores = tuple(ProductScore(product, propensity, f"propensity.{product}@v1", "CS-TEST-v1", False,
                                (ReasonCode("age", 0.1),))
                   for product, propensity in (propensities or {"wealth_fund": 0.3}).items())
    return CustomerScores(event_id, customer_id, event_type, now, now, segment, channel, "Asia/Shanghai", 40,  # type: ignore[arg-type]
                          ("debit_card",), True, scores)


def test_the_store_keeps_campaigns_and_every_change_with_its_author(database_url: str) -> None:
    store = CampaignStore(database_url)  # PostgreSQL is shared by the session: start from no campaigns here
    for campaign in store.all():
        store.delete(campaign.campaign_id, actor="test-setup")
    try:
        start = store.revision()
        created = store.put(_campaign("spring_fund"), actor="alice")
        updated = store.put(_campaign("spring_fund", value=75), actor="bob")
        store.put(_campaign("autumn_fund"), actor="alice")
        assert (created.action, updated.action) == ("created", "updated")
        assert store.get("spring_fund") == _campaign("spring_fund", value=75)
        assert [c.campaign_id for c in store.all()] == ["autumn_fund", "spring_fund"]
        deleted = store.delete("spring_fund", actor="carol")
        assert deleted is not None and store.get("spring_fund") is None and store.delete("spring_fund", "carol") is None
        history = store.history("spring_fund")
        assert [(c.action, c.actor) for c in history] == [("created", "alice"), ("updated", "bob"), ("deleted", "carol")]
        assert history[1].document is not None and history[1].document["value"] == 75
        assert store.revision() == start + 4 == deleted.revision
    finally:
        store.close()


def test_the_catalog_merges_file_and_console_and_reloads_either(tmp_path: Path) -> None:
    campaigns_file = tmp_path / "campaigns.yaml"
    document = yaml.safe_load((REPO_ROOT / "services/dispatch/campaigns.yaml").read_text())
    campaigns_file.write_text(yaml.safe_dump(document))
    store = CampaignStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    catalog = CampaignCatalog(campaigns_file, store)
    file_ids = {c["campaign_id"] for c in document["campaigns"]}
    assert {c.campaign_id for c in catalog.live.campaigns} == file_ids and not catalog.refresh()

    store.put(_campaign("console_only"), actor="alice")
    store.put(_campaign(sorted(file_ids)[0], value=1), actor="mallory")  # written behind the API's back: the file wins
    assert catalog.refresh()
    assert {c.campaign_id for c in catalog.live.console} == {"console_only"}
    assert next(c for c in catalog.live.campaigns if c.campaign_id == sorted(file_ids)[0]).value != 1

    document["campaigns"] = [c for c in document["campaigns"] if c["campaign_id"] == sorted(file_ids)[0]]
    document["arbitration"] = {"value": 0.5}
    campaigns_file.write_text(yaml.safe_dump(document))
    os.utime(campaigns_file, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert catalog.refresh() and len(catalog.live.campaigns) == 2 and catalog.live.campaign_file.arbitration.value == 0.5

    campaigns_file.write_text("campaigns: [{campaign_id: BAD}]")  # an edit gone wrong: the last good set stays live
    os.utime(campaigns_file, ns=(time.time_ns(), time.time_ns() + 2_000_000))
    assert not catalog.refresh() and len(catalog.live.campaigns) == 2
    store.close()


def test_arbitration_weights_segment_priority_and_channel_preference() -> None:
    cheap_likely = _campaign("cheap_likely", value=10, product="credit_card",
                             channels=[{"channel": "push", "template": "t"}])
    dear_unlikely = _campaign("dear_unlikely", value=100, product="mortgage",
                              channels=[{"channel": "email", "template": "t"}], segment_priority={"family": 3.0})
    today = dt.date.today()

    def winner(weights: ArbitrationWeights, segment: str = "affluent") -> str:
        ranked = rank(_scores("e1", "C1", segment=segment, channel="push",
                              propensities={"credit_card": 0.5, "mortgage": 0.06}),
                      (cheap_likely, dear_unlikely), today, weights)
        return ranked[0].campaign.campaign_id

    assert winner(ArbitrationWeights()) == "dear_unlikely"  # 6.0 > 5.0
    assert winner(ArbitrationWeights(value=0.5)) == "cheap_likely"  # value counts less: 1.58 > 0.6
    assert winner(ArbitrationWeights(preferred_channel_boost=1.5)) == "cheap_likely"  # push preferred: 7.5 > 6.0
    assert winner(ArbitrationWeights(value=0.5), segment="family") == "dear_unlikely"  # priority x3 for families


def _live_console_campaigns(port: int) -> float | None:
    """dispatch's own count of the console campaigns it decides with (its /metrics gauge)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith('cipherstream_live_campaigns{source="console"}'):
                return float(line.rsplit(" ", 1)[1])
    return None


async def test_a_console_campaign_makes_offers_in_a_running_dispatch_without_a_restart(
    settings: Settings, topics: list[str], tmp_path: Path, codec: AvroCodec,
) -> None:
    """The console writes campaigns to the store (services/console/actions.py); dispatch picks them up live."""
    settings = settings.model_copy(update={"campaign_refresh_s": 1.0})
    runner = ServiceRunner(settings, tmp_path / "logs")
    console_store = CampaignStore(settings.database_url.get_secret_value())
    try:
        runner.start("dispatch")
        port = runner.ports["dispatch"]
        assert _live_console_campaigns(port) == 0
        console_store.put(_campaign("payday_fund", value=90), actor="alice")
        await wait_until(lambda: _live_console_campaigns(port) == 1, timeout_s=30, what="dispatch reloading the campaigns")

        # Customers in a segment no file campaign for salary credits reaches: only the console's campaign can win.
        events = [_scores(f"e{index}", f"C{index:04d}", segment="student", channel="email") for index in range(20)]
        await produce(settings.kafka_bootstrap_servers, settings.topic("scores"),
                      [(s.customer_id.encode(), codec.encode(s)) for s in events])
        email = settings.topic(offers_topic("email"))
        records = await consume(settings.kafka_bootstrap_servers, [email], until=lambda got: len(got) >= len(events),
                                timeout_s=60)
        offers = [codec.decode(r.value, Offer) for r in records]
        assert {o.campaign_id for o in offers} == {"payday_fund"} and len(offers) == len(events)
        assert offers[0].message == "Console-made offer: wealth fund"

        console_store.delete("payday_fund", actor="bob")
        await wait_until(lambda: _live_console_campaigns(port) == 0, timeout_s=30, what="dispatch dropping the campaign")
        later = [_scores(f"f{index}", f"D{index:04d}", segment="student", channel="email") for index in range(5)]
        await produce(settings.kafka_bootstrap_servers, settings.topic("scores"),
                      [(s.customer_id.encode(), codec.encode(s)) for s in later])
        suppressions = await consume(settings.kafka_bootstrap_servers, [settings.topic("suppressions")],
                                     until=lambda got: len(got) >= len(later), timeout_s=60)
        assert len(suppressions) == len(later)  # deleted: no campaign is eligible any more
        assert len(await consume(settings.kafka_bootstrap_servers, [email], idle_s=1.0, timeout_s=10)) == len(events)
    finally:
        console_store.close()
        runner.stop_all()
