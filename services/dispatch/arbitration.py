"""Arbitration: which eligible campaigns, on which channel and in which order, for each scored
event of a batch. Pure: no I/O."""
from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from services.campaigns.definitions import ArbitrationWeights, Campaign, ChannelTemplate
from services.protocol.stream_messages import CustomerScores, ProductScore


@dataclass(frozen=True, slots=True)
class Candidate:
    campaign: Campaign
    channel: str
    template: str
    score: ProductScore
    rank_score: float


def local_time(received_at_ms: int, timezone: str) -> dt.datetime:
    """When the event happened in the customer's time zone (an unknown zone counts as UTC): its
    date is the contact window, its hour decides quiet hours."""
    try:
        zone = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = zoneinfo.ZoneInfo("UTC")
    return dt.datetime.fromtimestamp(received_at_ms / 1000, zone)


def local_day(received_at_ms: int, timezone: str) -> dt.date:
    """The customer's local calendar day when the event happened: the contact window."""
    return local_time(received_at_ms, timezone).date()


class RankTable:
    """Eligibility and ranking of a whole batch against every campaign at once (numpy).

    Built once per campaign set and weights (a reload builds a new one). Per batch: one row per
    event, one column per campaign (in campaign id order, so ties go to the smaller id): the
    eligibility mask (active on the customer's day, fired by this trigger, age, segment, product
    not already held, minimum propensity) and the weighted rank score, then a stable sort per row.
    Per-value rows (segment, day, products held, channel) are cached: a batch mostly repeats them.
    """

    def __init__(self, campaigns: tuple[Campaign, ...], weights: ArbitrationWeights) -> None:
        self.campaigns = tuple(sorted(campaigns, key=lambda campaign: campaign.campaign_id))
        self.weights = weights
        columns = self.campaigns
        self._products = sorted({campaign.product for campaign in columns})
        self._product_column = {product: index for index, product in enumerate(self._products)}
        self._product_of = np.array([self._product_column[c.product] for c in columns], dtype=np.intp)
        self._min_age = np.array([c.eligibility.min_age for c in columns], dtype=np.float64)
        self._max_age = np.array([c.eligibility.max_age for c in columns], dtype=np.float64)
        self._min_propensity = np.array([c.eligibility.min_propensity for c in columns], dtype=np.float64)
        self._value_term = np.array([c.value for c in columns], dtype=np.float64) ** weights.value
        self._by_trigger: dict[str, np.ndarray] = {}
        self._by_segment: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._by_day: dict[dt.date, np.ndarray] = {}
        self._by_held: dict[tuple[str, ...], np.ndarray] = {}
        self._by_channel: dict[str, tuple[np.ndarray, tuple[ChannelTemplate | None, ...]]] = {}

    def _trigger_row(self, trigger: str) -> np.ndarray:
        row = self._by_trigger.get(trigger)
        if row is None:
            row = self._by_trigger[trigger] = np.array([trigger in c.triggers for c in self.campaigns], dtype=bool)
        return row

    def _segment_rows(self, segment: str) -> tuple[np.ndarray, np.ndarray]:
        """Whether each campaign admits the segment, and its priority term for the segment."""
        rows = self._by_segment.get(segment)
        if rows is None:
            admitted = np.array([c.eligibility.segments is None or segment in c.eligibility.segments
                                 for c in self.campaigns], dtype=bool)
            priority = np.array([c.priority * c.segment_priority.get(segment, 1.0) for c in self.campaigns])
            rows = self._by_segment[segment] = (admitted, priority ** self.weights.priority)
        return rows

    def _day_row(self, day: dt.date) -> np.ndarray:
        row = self._by_day.get(day)
        if row is None:
            if len(self._by_day) > 64:  # days roll over; keep the cache small
                self._by_day.clear()
            row = self._by_day[day] = np.array([c.active_on(day) for c in self.campaigns], dtype=bool)
        return row

    def _held_row(self, held: tuple[str, ...]) -> np.ndarray:
        """Campaigns ruled out because the customer already holds their product."""
        row = self._by_held.get(held)
        if row is None:
            row = self._by_held[held] = np.array([c.eligibility.exclude_holders and c.product in held
                                                  for c in self.campaigns], dtype=bool)
        return row

    def _channel_rows(self, channel: str) -> tuple[np.ndarray, tuple[ChannelTemplate | None, ...]]:
        rows = self._by_channel.get(channel)
        if rows is None:
            templates = tuple(c.templates_by_channel.get(channel) for c in self.campaigns)
            boost = np.array([self.weights.preferred_channel_boost if t else 1.0 for t in templates])
            rows = self._by_channel[channel] = (boost, templates)
        return rows

    def rank_batch(self, batch: list[CustomerScores], days: list[dt.date]) -> list[Iterator[Candidate]]:
        """For each event, its eligible campaigns best first, each on its channel (see `rank`); lazily,
        as dispatch mostly needs only the first few."""
        if not batch or not self.campaigns:
            return [iter(()) for _ in batch]
        propensities = np.full((len(batch), len(self._products)), np.nan)
        score_of: list[dict[str, ProductScore]] = []
        for row, scores in enumerate(batch):
            by_product = {score.product: score for score in scores.scores}
            score_of.append(by_product)
            for product, score in by_product.items():
                column = self._product_column.get(product)
                if column is not None:
                    propensities[row, column] = score.propensity
        per_campaign = propensities[:, self._product_of]  # events x campaigns; NaN: no score
        segments = [self._segment_rows(scores.segment) for scores in batch]
        channels = [self._channel_rows(scores.preferred_channel) for scores in batch]
        ages = np.array([scores.age for scores in batch], dtype=np.float64)[:, None]
        with np.errstate(invalid="ignore"):
            mask = (np.stack([self._trigger_row(scores.event_type) for scores in batch])
                    & np.stack([self._day_row(day) for day in days])
                    & np.stack([admitted for admitted, _ in segments])
                    & ~np.stack([self._held_row(tuple(scores.products_held)) for scores in batch])
                    & (ages >= self._min_age) & (ages <= self._max_age)
                    & (per_campaign >= self._min_propensity))
            rank_scores = (np.power(per_campaign, self.weights.propensity) * self._value_term
                           * np.stack([priority for _, priority in segments])
                           * np.stack([boost for boost, _ in channels]))
        ordered = np.argsort(np.where(mask, -rank_scores, np.inf), axis=1, kind="stable")
        eligible_counts = mask.sum(axis=1).tolist()
        return [self._candidates(ordered[row, :eligible_counts[row]].tolist(), channels[row][1], score_of[row],
                                 rank_scores[row]) for row in range(len(batch))]

    def _candidates(self, columns: list[int], templates: tuple[ChannelTemplate | None, ...],
                    scores: dict[str, ProductScore], rank_scores: np.ndarray) -> Iterator[Candidate]:
        for column in columns:
            campaign = self.campaigns[column]
            template = templates[column] or campaign.channels[0]
            yield Candidate(campaign, template.channel, template.template, scores[campaign.product],
                            float(rank_scores[column]))


def rank(scores: CustomerScores, campaigns: tuple[Campaign, ...], day: dt.date,
         weights: ArbitrationWeights = ArbitrationWeights()) -> list[Candidate]:
    """Eligible campaigns, best first by the weighted propensity x value x priority (the priority
    differentiated by the customer's segment), each on the customer's preferred channel when the
    campaign has it (optionally boosted), else the campaign's first channel. Ties: campaign id."""
    return list(RankTable(campaigns, weights).rank_batch([scores], [day])[0])
