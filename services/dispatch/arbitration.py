"""Arbitration: which eligible campaign, on which channel, wins for one scored event. Pure."""
from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass

from services.core.messages import CustomerScores, ProductScore
from services.dispatch.campaigns import Campaign


@dataclass(frozen=True, slots=True)
class Candidate:
    campaign: Campaign
    channel: str
    template: str
    score: ProductScore
    rank_score: float


def local_day(received_at_ms: int, timezone: str) -> dt.date:
    """The customer's local calendar day when the event happened: the contact window."""
    try:
        zone = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = zoneinfo.ZoneInfo("UTC")
    return dt.datetime.fromtimestamp(received_at_ms / 1000, zone).date()


def eligible(campaign: Campaign, scores: CustomerScores, score: ProductScore, day: dt.date) -> bool:
    rules = campaign.eligibility
    return (
        campaign.active_on(day)
        and scores.event_type in campaign.triggers
        and rules.min_age <= scores.age <= rules.max_age
        and (rules.segments is None or scores.segment in rules.segments)
        and not (rules.exclude_holders and campaign.product in scores.products_held)
        and score.propensity >= rules.min_propensity
    )


def rank(scores: CustomerScores, campaigns: tuple[Campaign, ...], day: dt.date) -> list[Candidate]:
    """Eligible campaigns, best first by propensity x value x priority, each on the customer's
    preferred channel when the campaign has it, else the campaign's first channel."""
    by_product = {score.product: score for score in scores.scores}
    candidates = []
    for campaign in campaigns:
        score = by_product.get(campaign.product)
        if score is None or not eligible(campaign, scores, score, day):
            continue
        template = campaign.template_for(scores.preferred_channel) or campaign.channels[0]
        candidates.append(Candidate(campaign, template.channel, template.template, score,
                                    score.propensity * campaign.value * campaign.priority))
    return sorted(candidates, key=lambda candidate: (-candidate.rank_score, candidate.campaign.campaign_id))
