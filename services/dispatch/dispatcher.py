"""Dispatch: for each scored event, the best eligible offer that the contact policy allows,
or a suppression with the reason. Every decision carries its reason.

Control groups: `in_holdout` assigns each customer per campaign to treatment or holdout by a
hash, at the campaign's `holdout_share`. A holdout customer is scored and counted but never
contacted for that campaign, so `services/campaigns/uplift.py` can compare response rates.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from services.campaigns.definitions import ArbitrationWeights, Campaign, ContactRules
from services.campaigns.uplift import record_conversions, uplift
from services.core import metrics
from services.core.kafka import HandlerResult, Inbound, Outbound, now_ms
from services.dispatch.arbitration import Candidate, RankTable, local_time
from services.dispatch.contact_policy import ContactPolicy, Request
from services.protocol.catalog import offers_topic
from services.protocol.stream_messages import CustomerScores, Offer, OfferResponse, Suppression

SUPPRESSIONS_TOPIC = "suppressions"
# The contact policy walks at most this many of the best eligible offers: past the fifth, every
# cap that stopped the first ones would almost always stop the next ones too, and each candidate
# costs five keys in the Redis script.
MAX_CANDIDATES = 5
UNKNOWN_SEGMENT = "unknown"


def offer_id(customer_id: str, campaign_id: str, window: str) -> str:
    """The same customer, campaign and window always give the same offer id (the idempotency key).

    >>> offer_id("C1", "cc", "2026-11-25") == offer_id("C1", "cc", "2026-11-25")
    True
    """
    return hashlib.sha256(f"{customer_id}|{campaign_id}|{window}".encode()).hexdigest()[:32]


class _KeepUnknown(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@functools.lru_cache(maxsize=4096)
def render(template: str, candidate_product: str) -> str:
    """Fill a campaign template; unknown placeholders stay as written rather than failing.

    >>> render("{product} for {name}", "credit_card")
    'credit card for {name}'
    """
    return string.Formatter().vformat(template, (), _KeepUnknown(product=candidate_product.replace("_", " ")))


def in_holdout(customer_id: str, campaign: Campaign) -> bool:
    """Deterministic: the same customer is always in the same group of a campaign.

    >>> from services.campaigns.definitions import ChannelTemplate
    >>> campaign = Campaign(campaign_id="c", product="p", value=1, triggers=("app_login",),
    ...                     channels=(ChannelTemplate(channel="sms", template="t"),), holdout_share=0.25)
    >>> share = sum(in_holdout(f"C{i}", campaign) for i in range(4000)) / 4000
    >>> 0.22 < share < 0.28, in_holdout("C1", campaign) == in_holdout("C1", campaign)
    (True, True)
    """
    if campaign.holdout_share <= 0:
        return False
    digest = hashlib.sha256(f"holdout|{campaign.campaign_id}|{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < campaign.holdout_share


def iso_week(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


@dataclass
class Dispatcher:
    policy: ContactPolicy
    campaigns: tuple[Campaign, ...]
    rules: ContactRules = field(default_factory=ContactRules)
    quiet_hours: bool = True
    weights: ArbitrationWeights = field(default_factory=ArbitrationWeights)
    _reserved: list[tuple[str, str, str, str]] = field(default_factory=list)
    _table: RankTable | None = None
    _table_for: tuple[tuple[Campaign, ...], ArbitrationWeights] | None = None

    @property
    def redis(self) -> aioredis.Redis:
        return self.policy.redis

    def _rank_table(self) -> RankTable:
        """Built once per campaign set and weights: a reload assigns new objects, so identity tells
        (comparing 50 campaigns field by field on every batch would not be free)."""
        built_for = self._table_for
        if self._table is None or built_for is None or built_for[0] is not self.campaigns or built_for[1] is not self.weights:
            self._table, self._table_for = RankTable(self.campaigns, self.weights), (self.campaigns, self.weights)
        return self._table

    async def decide(self, batch: list[Inbound[CustomerScores]]) -> list[HandlerResult]:
        decided_at_ms = now_ms()
        plans: list[tuple[CustomerScores, dt.date, list[Candidate], str | None, str | None, bool]] = []
        requests: list[Request] = []
        days: list[dt.date] = []
        reasons: list[str | None] = []
        to_rank: list[int] = []  # events still in the running after the checks that need no campaign
        for inbound in batch:
            scores = inbound.message
            local = local_time(scores.received_at_ms, scores.timezone)
            reason = _pre_check(scores)
            if reason is None and self.quiet_hours and self.rules.quiet(local.hour):
                reason = "quiet_hours"
            days.append(local.date())
            reasons.append(reason)
            if reason is None:
                to_rank.append(len(days) - 1)
        ranked = dict(zip(to_rank, self._rank_table().rank_batch([batch[i].message for i in to_rank],
                                                                 [days[i] for i in to_rank])))
        for index, inbound in enumerate(batch):
            scores, day, reason = inbound.message, days[index], reasons[index]
            candidates: list[Candidate] = []
            holdouts: list[str] = []
            if reason is None:
                for candidate in ranked[index]:
                    if in_holdout(scores.customer_id, candidate.campaign):
                        holdouts.append(candidate.campaign.campaign_id)
                        continue
                    candidates.append(candidate)
                    if len(candidates) == MAX_CANDIDATES:
                        break
                if not candidates:
                    reason = "holdout" if holdouts else "no_eligible_campaign"
            if candidates or holdouts:  # the script records the control-group members either way
                requests.append(Request(scores.event_id, scores.customer_id, day.isoformat(), iso_week(day),
                                        [(c.campaign.campaign_id, c.channel, c.campaign.daily_budget,
                                          c.campaign.total_budget) for c in candidates], holdouts))
            plans.append((scores, day, candidates, reason, holdouts[0] if holdouts and not candidates else None,
                          bool(candidates or holdouts)))
        decisions = iter(await self.policy.decide_many(requests))
        results: list[HandlerResult] = []
        for scores, day, candidates, reason, campaign_id, requested in plans:
            decision = next(decisions) if requested else None
            if reason is None:  # candidates, so a decision came back
                assert decision is not None
                if decision.chosen is not None:
                    results.append([self._offer(scores, day.isoformat(), candidates[decision.chosen], decided_at_ms)])
                    continue
                reason = decision.reason
            results.append([] if reason == "duplicate_event" else [_suppression(scores, reason, decided_at_ms, campaign_id)])
        return results

    async def learn_responses(self, batch: list[Inbound[OfferResponse]]) -> list[HandlerResult]:
        """Channel responses: an opt-out takes effect for the very next decision; conversions feed uplift."""
        responses = [inbound.message for inbound in batch]
        await self.policy.opt_out([response.customer_id for response in responses if response.outcome == "opted_out"])
        conversions = [(r.campaign_id, r.customer_id) for r in responses if r.outcome == "converted"]
        await record_conversions(self.redis, self.policy.key_prefix, conversions)
        for campaign_id in {campaign_id for campaign_id, _ in conversions}:
            await uplift(self.redis, self.policy.key_prefix, campaign_id)  # refreshes the uplift gauge
        return [[] for _ in batch]

    def _offer(self, scores: CustomerScores, window: str, candidate: Candidate, decided_at_ms: int) -> Outbound:
        campaign_id = candidate.campaign.campaign_id
        offer = Offer(
            offer_id=offer_id(scores.customer_id, campaign_id, window), customer_id=scores.customer_id,
            campaign_id=campaign_id, product=candidate.campaign.product, channel=candidate.channel,
            message=render(candidate.template, candidate.campaign.product), propensity=candidate.score.propensity,
            rank_score=candidate.rank_score, model_version=candidate.score.model_version,
            service_number=candidate.score.service_number, reasons=candidate.score.reasons, event_id=scores.event_id,
            trigger=scores.event_type, segment=scores.segment, contact_window=window,
            received_at_ms=scores.received_at_ms, decided_at_ms=decided_at_ms,
        )
        self._reserved.append((scores.customer_id, campaign_id, window, scores.event_id))
        metrics.OFFERS.labels(candidate.channel, campaign_id).inc()
        metrics.EVENT_TO_OFFER_SECONDS.labels(candidate.channel).observe(max(0, decided_at_ms - scores.received_at_ms) / 1000)
        return Outbound(offers_topic(candidate.channel), scores.customer_id, offer)

    def take_confirmation(self) -> Callable[[], Awaitable[None]]:
        """Called as a batch's offers are shipped: what to do once the broker has them (mark their
        idempotency keys sent, count them treated). Bound to this batch's offers only, since the
        next batch is decided before this one is acknowledged."""
        reserved, self._reserved = self._reserved, []
        return functools.partial(self.policy.confirm_sent, reserved)


def _pre_check(scores: CustomerScores) -> str | None:
    """Reasons that rule out every offer before any campaign is looked at."""
    if scores.segment == UNKNOWN_SEGMENT:
        return "unknown_customer"
    if not scores.consent_marketing:
        return "no_consent"
    return None


SUPPRESSION_DETAILS = {
    "unknown_customer": "no profile for this customer yet",
    "no_consent": "customer has not consented to marketing",
    "frequency_cap": "customer reached today's contact cap",
    "channel_frequency_cap": "every eligible channel reached today's cap",
    "already_offered": "every eligible campaign was already offered in this window",
    "weekly_cap": "customer reached this week's contact cap",
    "quiet_hours": "inside the customer's quiet hours",
    "opted_out": "customer opted out of marketing",
    "suppression_list": "customer is on the suppression list",
    "budget_exhausted": "every eligible campaign's budget is spent",
    "holdout": "customer is in the campaign's control group: scored, not contacted",
}


def _suppression(scores: CustomerScores, reason: str, decided_at_ms: int, campaign_id: str | None = None) -> Outbound:
    metrics.SUPPRESSIONS.labels(reason).inc()
    detail = (f"no active campaign is eligible for trigger {scores.event_type}" if reason == "no_eligible_campaign"
              else SUPPRESSION_DETAILS.get(reason, reason))
    return Outbound(SUPPRESSIONS_TOPIC, scores.customer_id, Suppression(
        event_id=scores.event_id, customer_id=scores.customer_id, campaign_id=campaign_id, channel=None, reason=reason,
        detail=detail, decided_at_ms=decided_at_ms,
    ))
