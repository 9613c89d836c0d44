"""The records on the topics, both parties': frozen dataclasses with the same field names as
their schemas/*.avsc.

`core/avro.py` is the only codec; it maps each class to its schema by `SCHEMA`. Dead letters
are core's (`core/dead_letter.py`): every reader writes them.
Times are epoch milliseconds UTC (`*_ms`), money is in minor units (`*_minor`).
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar, Literal

EventType = Literal[
    "salary_credit", "large_deposit", "deposit", "card_spend_abroad", "card_spend", "transfer_out", "app_login"
]
TRIGGER_EVENT_TYPES: tuple[str, ...] = typing.get_args(EventType)
Outcome = Literal["delivered", "opened", "clicked", "converted", "opted_out", "ignored"]
OUTCOMES: tuple[str, ...] = typing.get_args(Outcome)
# A customer the style segmenter has not placed yet (before its warm-up, or without a profile).
UNASSIGNED_STYLE_TYPE = -1
UNASSIGNED_STYLE_NAME = "unassigned"


@dataclasses.dataclass(frozen=True, slots=True)
class ReasonCode:
    feature: str
    contribution: float


@dataclasses.dataclass(frozen=True, slots=True)
class CustomerEvent:
    SCHEMA: ClassVar[str] = "cipherstream.CustomerEvent"
    event_id: str
    customer_id: str
    event_type: EventType
    amount_minor: int
    currency: str
    country: str | None
    occurred_at_ms: int
    received_at_ms: int
    source_topic: str
    source_partition: int
    source_offset: int


@dataclasses.dataclass(frozen=True, slots=True)
class CustomerProfile:
    SCHEMA: ClassVar[str] = "cipherstream.CustomerProfile"
    customer_id: str
    age: int
    tenure_months: int
    monthly_income_minor: int
    balance_minor: int
    products_held: tuple[str, ...]
    segment: str
    preferred_channel: str
    timezone: str
    consent_marketing: bool
    updated_at_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class CustomerIdentity:
    SCHEMA: ClassVar[str] = "cipherstream.CustomerIdentity"
    customer_id: str
    national_id: str
    updated_at_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class ExchangeMessage:
    SCHEMA: ClassVar[str] = "cipherstream.ExchangeMessage"
    message_id: str
    kind: str
    sender: str
    session_id: str
    correlation_id: str
    payload: bytes
    sent_at_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class PartnerFeatures:
    SCHEMA: ClassVar[str] = "cipherstream.PartnerFeatures"
    partner_record_id: str
    features: dict[str, float]
    updated_at_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class ProductScore:
    product: str
    propensity: float
    model_version: str
    service_number: str
    partner_contributed: bool
    reasons: tuple[ReasonCode, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class CustomerScores:
    SCHEMA: ClassVar[str] = "cipherstream.CustomerScores"
    event_id: str
    customer_id: str
    event_type: EventType
    received_at_ms: int
    scored_at_ms: int
    segment: str
    preferred_channel: str
    timezone: str
    age: int
    products_held: tuple[str, ...]
    consent_marketing: bool
    scores: tuple[ProductScore, ...]
    # The customer's style type (services/models/segmenter.py): the id is what campaigns name.
    style_type_id: int = UNASSIGNED_STYLE_TYPE
    style_type_name: str = UNASSIGNED_STYLE_NAME


@dataclasses.dataclass(frozen=True, slots=True)
class Offer:
    SCHEMA: ClassVar[str] = "cipherstream.Offer"
    offer_id: str
    customer_id: str
    campaign_id: str
    product: str
    channel: str
    message: str
    propensity: float
    rank_score: float
    model_version: str
    service_number: str
    reasons: tuple[ReasonCode, ...]
    event_id: str
    trigger: EventType
    segment: str
    contact_window: str
    received_at_ms: int
    decided_at_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class Suppression:
    SCHEMA: ClassVar[str] = "cipherstream.Suppression"
    event_id: str
    customer_id: str
    campaign_id: str | None
    channel: str | None
    reason: str
    detail: str
    decided_at_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class OfferResponse:
    SCHEMA: ClassVar[str] = "cipherstream.OfferResponse"
    response_id: str
    offer_id: str
    event_id: str
    customer_id: str
    campaign_id: str
    product: str
    channel: str
    outcome: Outcome
    occurred_at_ms: int


Message = (
    CustomerEvent | CustomerProfile | CustomerIdentity | PartnerFeatures | CustomerScores | Offer | Suppression
    | OfferResponse | ExchangeMessage
)
MESSAGE_TYPES: tuple[type[Any], ...] = typing.get_args(Message)
