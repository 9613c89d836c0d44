"""Dispatch decisions against a real Redis: caps per day and week, quiet hours, opt-out at once,
suppression lists, budgets, control groups and uplift, and exactly one offer under replay."""
from __future__ import annotations

import datetime as dt

import pytest
import redis.asyncio as aioredis

from services.campaigns.definitions import Campaign, ChannelTemplate, ContactRules
from services.campaigns.uplift import uplift
from services.core.config import Settings
from services.core.kafka import Inbound
from services.dispatch.app import caps
from services.dispatch.contact_policy import ContactPolicy
from services.dispatch.dispatcher import Dispatcher, in_holdout
from services.protocol.stream_messages import (
    CustomerScores,
    Offer,
    OfferResponse,
    ProductScore,
    ReasonCode,
    Suppression,
)

SHANGHAI_NOON = int(dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp() * 1000)
DAY_MS = 24 * 3600 * 1000


def _campaign(campaign_id: str, **extra: object) -> Campaign:
    fields: dict[str, object] = {"value": 10, **extra}
    return Campaign(campaign_id=campaign_id, product="credit_card", triggers=("app_login",),  # type: ignore[arg-type]
                    channels=(ChannelTemplate(channel="push", template="hi"), ChannelTemplate(channel="sms", template="hi")),
                    **fields)


def _scores(event_id: str, customer_id: str = "C1", at_ms: int = SHANGHAI_NOON) -> CustomerScores:
    score = ProductScore("credit_card", 0.3, "m@v1", "CS-M-v1-x", False, (ReasonCode("age", 0.1),))
    return CustomerScores(event_id, customer_id, "app_login", at_ms, at_ms, "affluent", "push", "Asia/Shanghai", 40,
                          ("debit_card",), True, (score,))


def _inbound(message: object) -> Inbound:
    return Inbound(message, None, "scores", 0, 0, 0, None)


async def _dispatcher(settings: Settings, campaigns: tuple[Campaign, ...], rules: ContactRules | None = None,
                      quiet_hours: bool = True) -> Dispatcher:
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    rules = rules or ContactRules(daily_cap=5, weekly_cap=5, channel_daily_cap=5, channel_weekly_cap=5)
    return Dispatcher(ContactPolicy(redis, settings.redis_key_prefix, caps(rules)), campaigns, rules, quiet_hours)


async def _decide(dispatcher: Dispatcher, *scores: CustomerScores) -> list[Offer | Suppression | None]:
    results = await dispatcher.decide([_inbound(s) for s in scores])
    await dispatcher.take_confirmation()()
    return [result[0].message if result else None for result in results]  # type: ignore[index, union-attr]


async def test_daily_and_weekly_caps_count_in_the_customer_s_own_day_and_week(settings: Settings) -> None:
    rules = ContactRules(daily_cap=1, weekly_cap=2, channel_daily_cap=1, channel_weekly_cap=5)
    dispatcher = await _dispatcher(settings, (_campaign("a"), _campaign("b"), _campaign("c")), rules)
    _monday, tuesday, wednesday = (SHANGHAI_NOON + offset * DAY_MS for offset in range(3))
    first, second = await _decide(dispatcher, _scores("e1"), _scores("e2"))
    assert isinstance(first, Offer) and isinstance(second, Suppression) and second.reason == "frequency_cap"
    [third] = await _decide(dispatcher, _scores("e3", at_ms=tuesday))
    [fourth] = await _decide(dispatcher, _scores("e4", at_ms=wednesday))
    assert isinstance(third, Offer) and isinstance(fourth, Suppression) and fourth.reason == "weekly_cap"


async def test_quiet_hours_in_the_customer_s_time_zone(settings: Settings) -> None:
    rules = ContactRules(daily_cap=5, weekly_cap=5, channel_daily_cap=5, channel_weekly_cap=5,
                         quiet_start_hour=22, quiet_end_hour=7)
    dispatcher = await _dispatcher(settings, (_campaign("a"),), rules)
    late = SHANGHAI_NOON + 11 * 3600 * 1000  # 23:00 in Shanghai
    [night] = await _decide(dispatcher, _scores("e1", at_ms=late))
    [noon] = await _decide(dispatcher, _scores("e2"))
    assert isinstance(night, Suppression) and night.reason == "quiet_hours" and isinstance(noon, Offer)


async def test_an_opt_out_response_takes_effect_for_the_next_decision(settings: Settings) -> None:
    dispatcher = await _dispatcher(settings, (_campaign("a"), _campaign("b")))
    [offer] = await _decide(dispatcher, _scores("e1"))
    assert isinstance(offer, Offer)
    await dispatcher.learn_responses([_inbound(OfferResponse("r1", offer.offer_id, "e1", "C1", "a", "credit_card",
                                                             "push", "opted_out", 0))])
    [after] = await _decide(dispatcher, _scores("e2"))
    assert isinstance(after, Suppression) and after.reason == "opted_out"


async def test_suppression_list_for_one_campaign_or_all(settings: Settings) -> None:
    dispatcher = await _dispatcher(settings, (_campaign("a", value=100), _campaign("b")))
    await dispatcher.policy.suppress("C1", "a")
    [offer] = await _decide(dispatcher, _scores("e1"))
    assert isinstance(offer, Offer) and offer.campaign_id == "b"  # the better campaign is suppressed for C1
    await dispatcher.policy.suppress("C2")
    [none] = await _decide(dispatcher, _scores("e2", customer_id="C2"))
    assert isinstance(none, Suppression) and none.reason == "suppression_list"
    await dispatcher.policy.unsuppress("C2")
    assert await dispatcher.policy.suppressions_of("C2") == set()


async def test_budgets_stop_a_campaign_across_customers(settings: Settings) -> None:
    dispatcher = await _dispatcher(settings, (_campaign("a", daily_budget=2, total_budget=3),))
    decided = await _decide(dispatcher, *(_scores(f"e{i}", customer_id=f"C{i}") for i in range(3)))
    assert [type(d).__name__ for d in decided] == ["Offer", "Offer", "Suppression"]
    assert decided[2].reason == "budget_exhausted"  # type: ignore[union-attr]
    [next_day, spent] = await _decide(dispatcher, _scores("e9", "C9", SHANGHAI_NOON + DAY_MS),
                                      _scores("e10", "C10", SHANGHAI_NOON + DAY_MS))
    assert isinstance(next_day, Offer) and isinstance(spent, Suppression)  # the total budget of 3 is spent


async def test_holdout_customers_are_never_contacted_and_uplift_has_an_interval(settings: Settings) -> None:
    campaign = _campaign("a", holdout_share=0.3)
    dispatcher = await _dispatcher(settings, (campaign,))
    customers = [f"C{i}" for i in range(300)]
    decided = await _decide(dispatcher, *(_scores(f"e{c}", customer_id=c) for c in customers))
    for customer, decision in zip(customers, decided):
        if in_holdout(customer, campaign):
            assert isinstance(decision, Suppression) and decision.reason == "holdout" and decision.campaign_id == "a"
        else:
            assert isinstance(decision, Offer)
    holdout = [c for c in customers if in_holdout(c, campaign)]
    assert 60 < len(holdout) < 120
    treated = [c for c in customers if c not in holdout]
    conversions = treated[: len(treated) // 5] + holdout[: len(holdout) // 10]
    await dispatcher.learn_responses([_inbound(OfferResponse(f"r{c}", "", f"e{c}", c, "a", "credit_card", "push",
                                                             "converted", 0)) for c in conversions])
    report = await uplift(dispatcher.redis, settings.redis_key_prefix, "a")
    assert (report.treated, report.holdout) == (len(treated), len(holdout))
    assert report.uplift == pytest.approx(len(treated) // 5 / len(treated) - len(holdout) // 10 / len(holdout))
    assert report.ci_low < report.uplift < report.ci_high


async def test_replays_and_duplicates_never_make_a_second_offer(settings: Settings) -> None:
    dispatcher = await _dispatcher(settings, (_campaign("a"),), ContactRules(daily_cap=5, weekly_cap=5,
                                                                             channel_daily_cap=5, channel_weekly_cap=5))
    [offer] = await _decide(dispatcher, _scores("e1"))
    [replayed] = await _decide(dispatcher, _scores("e1"))  # the same event again: already sent
    [again] = await _decide(dispatcher, _scores("e2"))     # another event, same campaign and day
    assert isinstance(offer, Offer) and replayed is None
    assert isinstance(again, Suppression) and again.reason == "already_offered"
    # A worker that died after reserving but before the broker had the offer re-emits the same offer id.
    results = await dispatcher.decide([_inbound(_scores("e3", customer_id="C7"))])
    dispatcher._reserved.clear()  # the crash: the confirmation never ran
    [[first]] = results
    [resent] = await _decide(dispatcher, _scores("e3", customer_id="C7"))
    assert isinstance(resent, Offer) and resent.offer_id == first.message.offer_id
