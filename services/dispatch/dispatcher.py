"""Dispatch: for each scored event, the best eligible offer that the contact policy allows,
or a suppression with the reason. Every decision carries its reason."""
from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, field

from services.core import metrics
from services.core.catalog import offers_topic
from services.core.kafka import HandlerResult, Inbound, Outbound, now_ms
from services.core.messages import CustomerScores, Offer, Suppression
from services.dispatch.arbitration import Candidate, local_day, rank
from services.dispatch.campaigns import Campaign
from services.dispatch.contact_policy import ContactPolicy

SUPPRESSIONS_TOPIC = "suppressions"
UNKNOWN_SEGMENT = "unknown"


def offer_id(customer_id: str, campaign_id: str, window: str) -> str:
    """The same customer, campaign and window always give the same offer id (the idempotency key).

    >>> offer_id("C1", "cc", "2026-11-25") == offer_id("C1", "cc", "2026-11-25")
    True
    """
    return hashlib.sha256(f"{customer_id}|{campaign_id}|{window}".encode()).hexdigest()[:32]


def render(template: str, candidate_product: str) -> str:
    """Fill a campaign template; unknown placeholders stay as written rather than failing."""
    class _Keep(dict[str, str]):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"
    return string.Formatter().vformat(template, (), _Keep(product=candidate_product.replace("_", " ")))


@dataclass
class Dispatcher:
    policy: ContactPolicy
    campaigns: tuple[Campaign, ...]
    _reserved: list[tuple[str, str]] = field(default_factory=list)

    async def decide(self, batch: list[Inbound[CustomerScores]]) -> list[HandlerResult]:
        decided_at_ms = now_ms()
        plans: list[tuple[CustomerScores, str, list[Candidate], str | None]] = []
        for inbound in batch:
            scores = inbound.message
            window = local_day(scores.received_at_ms, scores.timezone).isoformat()
            pre_check = _pre_check(scores)
            candidates = [] if pre_check else rank(scores, self.campaigns, local_day(scores.received_at_ms, scores.timezone))
            plans.append((scores, window, candidates, pre_check or (None if candidates else "no_eligible_campaign")))
        to_decide = [(scores.event_id, scores.customer_id, window,
                      [(candidate.campaign.campaign_id, candidate.channel) for candidate in candidates])
                     for scores, window, candidates, reason in plans if reason is None]
        decisions = iter(await self.policy.decide_many(to_decide))
        results: list[HandlerResult] = []
        for scores, window, candidates, reason in plans:
            if reason is None:
                decision = next(decisions)
                if decision.chosen is not None:
                    results.append([self._offer(scores, window, candidates[decision.chosen], decided_at_ms)])
                    continue
                reason = decision.reason
            results.append([] if reason == "duplicate_event" else [_suppression(scores, reason, decided_at_ms)])
        return results

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
        self._reserved.append((self.policy.idempotency_key(scores.customer_id, campaign_id, window), scores.event_id))
        metrics.OFFERS.labels(candidate.channel, campaign_id).inc()
        metrics.EVENT_TO_OFFER_SECONDS.labels(candidate.channel).observe(max(0, decided_at_ms - scores.received_at_ms) / 1000)
        return Outbound(offers_topic(candidate.channel), scores.customer_id, offer)

    async def after_flush(self) -> None:
        """The broker has every offer of the batch: mark their idempotency keys sent."""
        reserved, self._reserved = self._reserved, []
        await self.policy.confirm_sent(reserved)


def _pre_check(scores: CustomerScores) -> str | None:
    """Reasons that rule out every offer before any campaign is looked at."""
    if scores.segment == UNKNOWN_SEGMENT:
        return "unknown_customer"
    if not scores.consent_marketing:
        return "no_consent"
    return None


def _suppression(scores: CustomerScores, reason: str, decided_at_ms: int) -> Outbound:
    metrics.SUPPRESSIONS.labels(reason).inc()
    details = {
        "unknown_customer": "no profile for this customer yet",
        "no_consent": "customer has not consented to marketing",
        "no_eligible_campaign": f"no active campaign is eligible for trigger {scores.event_type}",
        "frequency_cap": "customer reached today's contact cap",
        "channel_frequency_cap": "every eligible channel reached today's cap",
        "already_offered": "every eligible campaign was already offered in this window",
    }
    return Outbound(SUPPRESSIONS_TOPIC, scores.customer_id, Suppression(
        event_id=scores.event_id, customer_id=scores.customer_id, campaign_id=None, channel=None, reason=reason,
        detail=details.get(reason, reason), decided_at_ms=decided_at_ms,
    ))
