"""Uplift per campaign: response rate of the treated minus that of the holdout, with a 95% interval.

Membership is kept in Redis sets per campaign: `treated:<campaign>` (offered), `holdout:<campaign>`
(eligible, held out), `converted:<campaign>` (converted: after an offer, or on their own for the
holdout, as the bank's product feed reports). The interval is the normal approximation for a
difference of two proportions (Wald): uplift +- 1.96 sqrt(p_t(1-p_t)/n_t + p_h(1-p_h)/n_h).

>>> report = Uplift.of("c", treated=1000, treated_converted=80, holdout=1000, holdout_converted=50)
>>> round(report.uplift, 3), round(report.ci_low, 3), round(report.ci_high, 3)
(0.03, 0.008, 0.052)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from services.core import metrics

Z_95 = 1.959964


@dataclass(frozen=True)
class Uplift:
    campaign_id: str
    treated: int
    treated_converted: int
    holdout: int
    holdout_converted: int
    uplift: float
    ci_low: float
    ci_high: float

    @classmethod
    def of(cls, campaign_id: str, *, treated: int, treated_converted: int, holdout: int, holdout_converted: int) -> Uplift:
        if not treated or not holdout:
            return cls(campaign_id, treated, treated_converted, holdout, holdout_converted, math.nan, math.nan, math.nan)
        p_t, p_h = treated_converted / treated, holdout_converted / holdout
        margin = Z_95 * math.sqrt(p_t * (1 - p_t) / treated + p_h * (1 - p_h) / holdout)
        return cls(campaign_id, treated, treated_converted, holdout, holdout_converted, p_t - p_h,
                   p_t - p_h - margin, p_t - p_h + margin)


def _key(key_prefix: str, kind: str, campaign_id: str) -> str:
    return f"{key_prefix}{kind}:{campaign_id}"


async def record_members(redis: aioredis.Redis, key_prefix: str, kind: str, members: Sequence[tuple[str, str]]) -> None:
    """(campaign, customer) pairs into the `treated` or `holdout` set of each campaign."""
    by_campaign: dict[str, list[str]] = {}
    for campaign_id, customer_id in members:
        by_campaign.setdefault(campaign_id, []).append(customer_id)
    if by_campaign:  # one SADD per campaign, not per customer
        pipeline = redis.pipeline(transaction=False)
        for campaign_id, customers in by_campaign.items():
            pipeline.sadd(_key(key_prefix, kind, campaign_id), *customers)
        await pipeline.execute()


async def record_conversions(redis: aioredis.Redis, key_prefix: str, conversions: Sequence[tuple[str, str]]) -> None:
    await record_members(redis, key_prefix, "converted", conversions)


async def uplift(redis: aioredis.Redis, key_prefix: str, campaign_id: str) -> Uplift:
    """The campaign's uplift now; also published as the cipherstream_campaign_uplift gauge."""
    treated, holdout, converted = (_key(key_prefix, kind, campaign_id) for kind in ("treated", "holdout", "converted"))
    pipeline = redis.pipeline(transaction=False)
    pipeline.scard(treated)
    pipeline.scard(holdout)
    pipeline.sintercard(2, [treated, converted])
    pipeline.sintercard(2, [holdout, converted])
    n_t, n_h, c_t, c_h = await pipeline.execute()
    report = Uplift.of(campaign_id, treated=n_t, treated_converted=c_t, holdout=n_h, holdout_converted=c_h)
    if not math.isnan(report.uplift):
        metrics.CAMPAIGN_UPLIFT.labels(campaign_id).set(report.uplift)
    return report
