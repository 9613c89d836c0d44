"""Campaigns as the marketing team writes them (YAML), validated with errors that name the field."""
from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path
from typing import Annotated

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from services.core.errors import ConfigError
from services.protocol.catalog import CHANNELS
from services.protocol.stream_messages import TRIGGER_EVENT_TYPES

Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelTemplate(_Strict):
    channel: str
    template: Annotated[str, StringConstraints(min_length=1, max_length=500)]

    @model_validator(mode="after")
    def _known_channel(self) -> ChannelTemplate:
        if self.channel not in CHANNELS:
            raise ValueError(f"unknown channel {self.channel!r}; known: {', '.join(CHANNELS)}")
        return self


class Eligibility(_Strict):
    min_age: int = Field(default=18, ge=0, le=120)
    max_age: int = Field(default=120, ge=0, le=120)
    segments: tuple[Identifier, ...] | None = None
    exclude_holders: bool = True
    min_propensity: float = Field(default=0.0, ge=0.0, le=1.0)


class Campaign(_Strict):
    campaign_id: Identifier
    product: Identifier
    value: float = Field(gt=0, description="expected value of one conversion, in major currency units")
    priority: float = Field(default=1.0, gt=0)
    # Per-segment multipliers on the priority (a segment not named keeps 1.0).
    segment_priority: dict[Identifier, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    triggers: tuple[str, ...] = Field(min_length=1)
    channels: tuple[ChannelTemplate, ...] = Field(min_length=1)
    eligibility: Eligibility = Eligibility()
    start: dt.date | None = None
    end: dt.date | None = None
    daily_budget: int = Field(default=0, ge=0, description="offers per day across customers; 0: no cap")
    total_budget: int = Field(default=0, ge=0, description="offers over the campaign's life; 0: no cap")
    holdout_share: float = Field(default=0.0, ge=0.0, lt=1.0,
                                 description="share of customers kept as a control group: scored, never contacted")

    @field_validator("triggers")
    @classmethod
    def _known_triggers(cls, triggers: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(triggers) - set(TRIGGER_EVENT_TYPES)
        if unknown:
            raise ValueError(f"unknown triggers {sorted(unknown)}; known: {', '.join(TRIGGER_EVENT_TYPES)}")
        return triggers

    @model_validator(mode="after")
    def _consistent(self) -> Campaign:
        if self.start and self.end and self.end < self.start:
            raise ValueError("end is before start")
        if self.eligibility.max_age < self.eligibility.min_age:
            raise ValueError("eligibility.max_age is below min_age")
        return self

    def active_on(self, day: dt.date) -> bool:
        return (self.start is None or self.start <= day) and (self.end is None or day <= self.end)

    @functools.cached_property
    def templates_by_channel(self) -> dict[str, ChannelTemplate]:
        """The first template per channel (arbitration looks one up per candidate)."""
        by_channel: dict[str, ChannelTemplate] = {}
        for template in self.channels:
            by_channel.setdefault(template.channel, template)
        return by_channel


class ContactRules(_Strict):
    """The contact policy around every campaign (per customer; windows in the customer's time zone)."""

    daily_cap: int = Field(default=1, ge=0, description="offers per customer per day, across campaigns")
    weekly_cap: int = Field(default=3, ge=0, description="offers per customer per week, across campaigns")
    channel_daily_cap: int = Field(default=1, ge=0)
    channel_weekly_cap: int = Field(default=2, ge=0)
    # No contact from quiet_start_hour until quiet_end_hour, customer's local time (equal: none).
    quiet_start_hour: int = Field(default=0, ge=0, le=23)
    quiet_end_hour: int = Field(default=0, ge=0, le=23)

    def quiet(self, local_hour: int) -> bool:
        """True inside the quiet hours (which may wrap past midnight).

        >>> ContactRules(quiet_start_hour=21, quiet_end_hour=8).quiet(23), ContactRules().quiet(23)
        (True, False)
        """
        start, end = self.quiet_start_hour, self.quiet_end_hour
        if start == end:
            return False
        return start <= local_hour < end if start < end else local_hour >= start or local_hour < end


class ArbitrationWeights(_Strict):
    """rank = propensity^propensity x value^value x (priority x segment priority)^priority, times
    preferred_channel_boost when the campaign can reach the customer on the channel they prefer.

    >>> ArbitrationWeights().rank(0.2, 100, 1.5, preferred_channel=False)
    30.0
    >>> ArbitrationWeights(value=0, preferred_channel_boost=2).rank(0.2, 100, 1.0, preferred_channel=True)
    0.4
    """

    propensity: float = Field(default=1.0, ge=0, le=4)
    value: float = Field(default=1.0, ge=0, le=4)
    priority: float = Field(default=1.0, ge=0, le=4)
    preferred_channel_boost: float = Field(default=1.0, gt=0, le=10)

    def rank(self, propensity: float, value: float, priority: float, *, preferred_channel: bool) -> float:
        score = propensity ** self.propensity * value ** self.value * priority ** self.priority
        return score * self.preferred_channel_boost if preferred_channel else score


class CampaignFile(_Strict):
    campaigns: tuple[Campaign, ...] = Field(min_length=1)
    contact_rules: ContactRules = ContactRules()
    arbitration: ArbitrationWeights = ArbitrationWeights()

    @model_validator(mode="after")
    def _unique_ids(self) -> CampaignFile:
        ids = [campaign.campaign_id for campaign in self.campaigns]
        duplicates = sorted({campaign_id for campaign_id in ids if ids.count(campaign_id) > 1})
        if duplicates:
            raise ValueError(f"duplicate campaign_id {duplicates}")
        return self


def load_campaign_file(path: Path) -> CampaignFile:
    """Read and validate a campaigns file; any problem is a ConfigError naming the file and field."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read campaigns file {path}: {exc}") from exc
    try:
        return CampaignFile.model_validate(document)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"invalid campaigns file {path}: {validation_problems(exc)}") from exc


def validation_problems(error: pydantic.ValidationError) -> str:
    """One line naming each bad field: `channels.0.channel: unknown channel 'fax'; ...`."""
    return "; ".join(f"{'.'.join(map(str, problem['loc']))}: {problem['msg']}" for problem in error.errors())
