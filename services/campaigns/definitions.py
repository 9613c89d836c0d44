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
# A customer style type as scoring publishes it (`style_type_id`): ids are stable, names are not.
StyleTypeId = Annotated[int, Field(ge=0)]


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
    # Only these style types (an unassigned customer is in none of them), or any but the excluded.
    style_types: tuple[StyleTypeId, ...] | None = None
    exclude_style_types: tuple[StyleTypeId, ...] = ()
    exclude_holders: bool = True
    min_propensity: float = Field(default=0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _style_types_apart(self) -> Eligibility:
        if self.style_types == ():
            raise ValueError("style_types is empty, so no customer could be eligible; leave it out to admit every style type")
        both = sorted(set(self.style_types or ()) & set(self.exclude_style_types))
        if both:
            raise ValueError(f"style types {both} are both in style_types and in exclude_style_types")
        return self

    def admits_style(self, style_type_id: int) -> bool:
        """Whether a customer of this style type (-1: unassigned) may be offered the campaign.

        >>> Eligibility(style_types=(2, 5)).admits_style(5), Eligibility(exclude_style_types=(5,)).admits_style(5)
        (True, False)
        >>> Eligibility(style_types=(2,)).admits_style(-1), Eligibility(exclude_style_types=(2,)).admits_style(-1)
        (False, True)
        """
        if self.style_types is not None and style_type_id not in self.style_types:
            return False
        return style_type_id not in self.exclude_style_types


class Campaign(_Strict):
    campaign_id: Identifier
    product: Identifier
    value: float = Field(gt=0, description="expected value of one conversion, in major currency units")
    priority: float = Field(default=1.0, gt=0)
    # Per-segment and per-style-type multipliers on the priority (one not named keeps 1.0).
    segment_priority: dict[Identifier, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    style_priority: dict[StyleTypeId, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
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
    """rank = propensity^propensity x value^value x (priority x segment priority x style priority)^priority, times
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
    """Read and validate a campaigns file; any problem is a ConfigError naming the file, the
    campaign and the field."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read campaigns file {path}: {exc}") from exc
    try:
        return CampaignFile.model_validate(document)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"invalid campaigns file {path}: {validation_problems(exc, document)}") from exc


def validation_problems(error: pydantic.ValidationError, document: object = None) -> str:
    """One line naming each bad field, and the campaign by its id where the document has one:
    `campaigns.1.eligibility.style_types.0 (campaign 'travel'): Input should be ...; ...`.

    >>> campaign = {"product": "p", "value": 1, "triggers": ["app_login"], "channels": [{"channel": "sms", "template": "t"}]}
    >>> document = {"campaigns": [{**campaign, "campaign_id": "cards"},
    ...                           {**campaign, "campaign_id": "travel", "eligibility": {"style_types": [-1]}}]}
    >>> try:
    ...     CampaignFile.model_validate(document)
    ... except pydantic.ValidationError as error:
    ...     print(validation_problems(error, document))
    campaigns.1.eligibility.style_types.0 (campaign 'travel'): Input should be greater than or equal to 0
    """
    campaigns = document.get("campaigns") if isinstance(document, dict) else None
    lines = []
    for problem in error.errors():
        location, where = problem["loc"], ""
        if len(location) > 1 and location[0] == "campaigns" and isinstance(location[1], int) \
                and isinstance(campaigns, list) and location[1] < len(campaigns) and isinstance(campaigns[location[1]], dict) \
                and "campaign_id" in campaigns[location[1]]:
            where = f" (campaign {campaigns[location[1]]['campaign_id']!r})"
        lines.append(f"{'.'.join(map(str, location))}{where}: {problem['msg']}")
    return "; ".join(lines)
