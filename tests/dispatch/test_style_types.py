"""Style types in dispatch against a real Redis: campaigns that include or exclude style types,
priority weighed by style type, and a campaigns file whose bad style fields are named with
their campaign."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.campaigns.definitions import Campaign, ContactRules, load_campaign_file
from services.core.config import Settings
from services.core.errors import ConfigError
from services.core.kafka import Inbound
from services.dispatch.app import caps
from services.dispatch.contact_policy import ContactPolicy
from services.dispatch.dispatcher import Dispatcher
from services.protocol.stream_messages import (
    UNASSIGNED_STYLE_TYPE,
    CustomerScores,
    Offer,
    ProductScore,
    ReasonCode,
    Suppression,
)

SHANGHAI_NOON = int(dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp() * 1000)


def _campaign(campaign_id: str, product: str = "credit_card", **extra: object) -> Campaign:
    return Campaign.model_validate({"campaign_id": campaign_id, "product": product, "value": 10, "triggers": ["app_login"],
                                    "channels": [{"channel": "push", "template": "hi"}], **extra})


def _scores(customer_id: str, style_type_id: int, propensities: dict[str, float] | None = None) -> CustomerScores:
    scores = tuple(ProductScore(product, propensity, "m@v1", "CS-M-v1-x", False, (ReasonCode("age", 0.1),))
                   for product, propensity in (propensities or {"credit_card": 0.3}).items())
    return CustomerScores(f"e-{customer_id}", customer_id, "app_login", SHANGHAI_NOON, SHANGHAI_NOON, "affluent", "push",
                          "Asia/Shanghai", 40, ("debit_card",), True, scores, style_type_id, f"type {style_type_id}")


async def _decide(settings: Settings, campaigns: tuple[Campaign, ...], *scores: CustomerScores) -> list[Offer | Suppression]:
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    rules = ContactRules(daily_cap=5, weekly_cap=5, channel_daily_cap=5, channel_weekly_cap=5)
    dispatcher = Dispatcher(ContactPolicy(redis, settings.redis_key_prefix, caps(rules)), campaigns, rules, quiet_hours=False)
    try:
        results = await dispatcher.decide([Inbound(s, None, "scores", 0, 0, 0, None) for s in scores])
        await dispatcher.take_confirmation()()
        return [result[0].message for result in results]  # type: ignore[misc]
    finally:
        await redis.aclose()


async def test_a_campaign_for_some_style_types_offers_only_to_their_customers(settings: Settings) -> None:
    campaign = _campaign("digital_card", eligibility={"style_types": [2, 5]})
    decided = await _decide(settings, (campaign,), _scores("C1", 2), _scores("C2", 5), _scores("C3", 3),
                            _scores("C4", UNASSIGNED_STYLE_TYPE))
    assert [type(decision).__name__ for decision in decided] == ["Offer", "Offer", "Suppression", "Suppression"]
    assert all(decision.reason == "no_eligible_campaign" for decision in decided[2:])  # type: ignore[union-attr]


async def test_excluded_style_types_are_never_offered_and_unassigned_customers_still_are(settings: Settings) -> None:
    campaign = _campaign("not_for_savers", eligibility={"exclude_style_types": [4]})
    decided = await _decide(settings, (campaign,), _scores("C1", 4), _scores("C2", 1), _scores("C3", UNASSIGNED_STYLE_TYPE))
    assert isinstance(decided[0], Suppression) and decided[0].reason == "no_eligible_campaign"
    assert isinstance(decided[1], Offer) and isinstance(decided[2], Offer)


async def test_style_priority_decides_which_campaign_a_style_type_gets(settings: Settings) -> None:
    cards = _campaign("cards", "credit_card")  # 0.30 x 10 = 3.0
    funds = _campaign("funds", "wealth_fund", style_priority={3: 2.0})  # 0.20 x 10 = 2.0, x2 for style type 3
    propensities = {"credit_card": 0.3, "wealth_fund": 0.2}
    decided = await _decide(settings, (cards, funds), _scores("C1", 1, propensities), _scores("C2", 3, propensities))
    assert [decision.campaign_id for decision in decided] == ["cards", "funds"]  # type: ignore[union-attr]
    assert decided[1].rank_score == pytest.approx(4.0)  # type: ignore[union-attr]


def _write(tmp_path: Path, eligibility: str = "{}", extra: str = "") -> Path:
    path = tmp_path / "campaigns.yaml"
    path.write_text("campaigns:\n"
                    "  - {campaign_id: fine, product: credit_card, value: 10, triggers: [app_login],"
                    " channels: [{channel: sms, template: t}]}\n"
                    f"  - {{campaign_id: styled, product: wealth_fund, value: 10, triggers: [app_login],"
                    f" channels: [{{channel: sms, template: t}}], eligibility: {eligibility}{extra}}}\n")
    return path


@pytest.mark.parametrize("eligibility, extra, field", [
    ("{style_types: [1, 2], exclude_style_types: [2]}", "", "campaigns.1.eligibility (campaign 'styled')"),
    ("{style_types: []}", "", "campaigns.1.eligibility (campaign 'styled')"),
    ("{style_types: [-3]}", "", "campaigns.1.eligibility.style_types.0 (campaign 'styled')"),
    ("{exclude_style_types: [kind]}", "", "campaigns.1.eligibility.exclude_style_types.0 (campaign 'styled')"),
    ("{}", ", style_priority: {2: 0}", "campaigns.1.style_priority.2 (campaign 'styled')"),
    ("{}", ", style_priority: {young: 2}", "campaigns.1.style_priority.young.[key] (campaign 'styled')"),
])
def test_a_bad_style_field_is_refused_naming_the_campaign_and_the_field(tmp_path: Path, eligibility: str, extra: str,
                                                                         field: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_campaign_file(_write(tmp_path, eligibility, extra))
    assert field in str(refused.value) and str(tmp_path) in str(refused.value), str(refused.value)


def test_style_fields_load_from_the_file(tmp_path: Path) -> None:
    loaded = load_campaign_file(_write(tmp_path, "{style_types: [1, 2]}", ", style_priority: {3: 1.5}"))
    styled = loaded.campaigns[1]
    assert styled.eligibility.style_types == (1, 2) and styled.style_priority == {3: 1.5}
    assert loaded.campaigns[0].eligibility.admits_style(UNASSIGNED_STYLE_TYPE)
