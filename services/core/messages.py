"""Messages on the topics: frozen dataclasses with the same field names as their schemas/*.avsc.

`core/avro.py` is the only codec; it maps each class to its schema by `SCHEMA`.
Times are epoch milliseconds UTC (`*_ms`), money is in minor units (`*_minor`).
"""
from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, ClassVar, Literal, TypeVar

EventType = Literal[
    "salary_credit", "large_deposit", "deposit", "card_spend_abroad", "card_spend", "transfer_out", "app_login"
]
TRIGGER_EVENT_TYPES: tuple[str, ...] = typing.get_args(EventType)
Outcome = Literal["delivered", "opened", "clicked", "converted", "opted_out", "ignored"]
OUTCOMES: tuple[str, ...] = typing.get_args(Outcome)


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


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    SCHEMA: ClassVar[str] = "cipherstream.DeadLetter"
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    error_type: str
    detail: str
    service: str
    failed_at_ms: int


Message = (
    CustomerEvent | CustomerProfile | PartnerFeatures | CustomerScores | Offer | Suppression | OfferResponse | DeadLetter
)
MESSAGE_TYPES: tuple[type[Any], ...] = typing.get_args(Message)
M = TypeVar("M")


@functools.cache
def _nested_fields(cls: type[Any]) -> dict[str, tuple[str, type[Any]]]:
    """Which fields hold a nested record ('one') or a sequence of records ('many'), and of what class."""
    nested: dict[str, tuple[str, type[Any]]] = {}
    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            nested[name] = ("one", hint)  # type: ignore[assignment]
        elif typing.get_origin(hint) is tuple:
            item = typing.get_args(hint)[0]
            nested[name] = ("many", item) if dataclasses.is_dataclass(item) else ("tuple", item)
    return nested


def to_record(message: Any) -> dict[str, Any]:
    """A message as the plain dict fastavro writes.

    >>> to_record(ReasonCode("age", 0.5))
    {'feature': 'age', 'contribution': 0.5}
    """
    record = {field.name: getattr(message, field.name) for field in dataclasses.fields(message)}
    for name, (kind, _) in _nested_fields(type(message)).items():
        if kind == "one":
            record[name] = to_record(record[name])
        elif kind == "many":
            record[name] = [to_record(item) for item in record[name]]
        else:
            record[name] = list(record[name])
    return record


def from_record(cls: type[M], record: dict[str, Any]) -> M:
    """Build a message from the dict fastavro reads (lists become tuples, nested dicts records).

    >>> from_record(ReasonCode, {"feature": "age", "contribution": 0.5})
    ReasonCode(feature='age', contribution=0.5)
    """
    values = dict(record)
    for name, (kind, item_cls) in _nested_fields(cls).items():
        if kind == "one":
            values[name] = from_record(item_cls, values[name])
        elif kind == "many":
            values[name] = tuple(from_record(item_cls, item) for item in values[name])
        else:
            values[name] = tuple(values[name])
    return cls(**values)
