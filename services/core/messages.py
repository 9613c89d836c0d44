"""Messages on the topics: frozen dataclasses with the same field names as their schemas/*.avsc.

`core/avro.py` is the only codec; it maps each class to its schema by `SCHEMA`.
Times are epoch milliseconds UTC (`*_ms`), money is in minor units (`*_minor`).
"""
from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable
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
    CustomerEvent | CustomerProfile | CustomerIdentity | PartnerFeatures | CustomerScores | Offer | Suppression
    | OfferResponse | DeadLetter | ExchangeMessage
)
MESSAGE_TYPES: tuple[type[Any], ...] = typing.get_args(Message)
M = TypeVar("M")


@functools.cache
def _nested_fields(cls: type[Any]) -> dict[str, tuple[str, type[Any]]]:
    """Which fields hold a nested record ('one'), a sequence of records ('many') or of plain values
    ('tuple'), and of what class."""
    nested: dict[str, tuple[str, type[Any]]] = {}
    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            nested[name] = ("one", hint)  # type: ignore[assignment]
        elif typing.get_origin(hint) is tuple:
            item = typing.get_args(hint)[0]
            nested[name] = ("many", item) if dataclasses.is_dataclass(item) else ("tuple", item)
    return nested


# The converters below are generated once per message class, as `dataclasses` generates
# __init__: on the hot path a generic field loop cost 25 us per CustomerScores each way,
# the generated code about a fifth of that.

@functools.cache
def _record_writer(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
    nested = _nested_fields(cls)
    items, namespace = [], {}
    for field in dataclasses.fields(cls):
        kind, item_cls = nested.get(field.name, ("plain", object))
        value = f"message.{field.name}"
        if kind == "one":
            namespace[f"w_{field.name}"] = _record_writer(item_cls)
            value = f"w_{field.name}({value})"
        elif kind == "many":
            namespace[f"w_{field.name}"] = _record_writer(item_cls)
            value = f"[w_{field.name}(item) for item in {value}]"
        elif kind == "tuple":
            value = f"list({value})"
        items.append(f"{field.name!r}: {value}")
    source = f"def to_record(message):\n    return {{{', '.join(items)}}}\n"
    exec(source, namespace)  # noqa: S102 - source built above from dataclass field names only
    writer: Callable[[Any], dict[str, Any]] = namespace["to_record"]
    return writer


@functools.cache
def _record_reader(cls: type[Any]) -> Callable[[dict[str, Any]], Any]:
    nested = _nested_fields(cls)
    arguments, namespace = [], {"cls": cls}
    for field in dataclasses.fields(cls):
        kind, item_cls = nested.get(field.name, ("plain", object))
        value = f"record[{field.name!r}]"
        if kind == "one":
            namespace[f"r_{field.name}"] = _record_reader(item_cls)
            value = f"r_{field.name}({value})"
        elif kind == "many":
            namespace[f"r_{field.name}"] = _record_reader(item_cls)
            value = f"tuple([r_{field.name}(item) for item in {value}])"
        elif kind == "tuple":
            value = f"tuple({value})"
        arguments.append(value)
    source = f"def from_record(record):\n    return cls({', '.join(arguments)})\n"
    exec(source, namespace)  # noqa: S102 - source built above from dataclass field names only
    reader: Callable[[dict[str, Any]], Any] = namespace["from_record"]
    return reader


def to_record(message: Any) -> dict[str, Any]:
    """A message as the plain dict fastavro writes.

    >>> to_record(ReasonCode("age", 0.5))
    {'feature': 'age', 'contribution': 0.5}
    """
    return _record_writer(type(message))(message)


def from_record(cls: type[M], record: dict[str, Any]) -> M:
    """Build a message from the dict fastavro reads (lists become tuples, nested dicts records).

    >>> from_record(ReasonCode, {"feature": "age", "contribution": 0.5})
    ReasonCode(feature='age', contribution=0.5)
    """
    message: M = _record_reader(cls)(record)
    return message
