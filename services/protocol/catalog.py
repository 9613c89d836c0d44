"""Every topic, who owns it, and what it carries: the contracts between services and parties.

Topics owned by one party stay on that party's cluster; `exchange.*` topics are the only ones
both parties may read or write (Kafka ACLs and TLS in production).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from services.core.config import Settings
from services.core.dead_letter import DeadLetter
from services.core.topic_names import EXCHANGE_TOPIC_PREFIX, dlq_name
from services.protocol import stream_messages as messages

CHANNELS: tuple[str, ...] = ("sms", "push", "email", "callcentre", "wechat")
Owner = Literal["bank", "partner", "exchange"]


@dataclass(frozen=True)
class TopicSpec:
    name: str
    owner: Owner
    message: type[Any] | None  # None: raw JSON from a source system, validated by the reading service
    description: str
    compacted: bool = False


def offers_topic(channel: str) -> str:
    return f"offers.{channel}"


EXCHANGE_TO_PARTNER = f"{EXCHANGE_TOPIC_PREFIX}to_partner"
EXCHANGE_TO_BANK = f"{EXCHANGE_TOPIC_PREFIX}to_bank"


_TOPICS = [
    TopicSpec("bank.events.raw", "bank", None, "core-banking CDC records (JSON): transactions, logins, customers"),
    TopicSpec("customer.events", "bank", messages.CustomerEvent, "canonical customer events"),
    TopicSpec("customer.profiles", "bank", messages.CustomerProfile, "current customer profile", compacted=True),
    TopicSpec("customer.identities", "bank", messages.CustomerIdentity, "identity data: PSI (exchange), shown masked (console)",
              compacted=True),
    TopicSpec("scores", "bank", messages.CustomerScores, "one propensity per product for each event"),
    *(TopicSpec(offers_topic(channel), "bank", messages.Offer, f"offers for the {channel} channel") for channel in CHANNELS),
    TopicSpec("suppressions", "bank", messages.Suppression, "offers not made, with the reason"),
    TopicSpec("responses", "bank", messages.OfferResponse, "channel responses; labels for online learning"),
    TopicSpec("partner.features.raw", "partner", None, "the partner's feature feed (JSON)"),
    TopicSpec("partner.features", "partner", messages.PartnerFeatures, "validated partner features", compacted=True),
    TopicSpec(EXCHANGE_TO_PARTNER, "exchange", messages.ExchangeMessage, "bank -> partner protocol messages"),
    TopicSpec(EXCHANGE_TO_BANK, "exchange", messages.ExchangeMessage, "partner -> bank protocol messages"),
]
# Every topic a service reads (reporting reads the offers and suppressions too).
_INPUTS_WITH_DLQ = [
    "bank.events.raw", "customer.events", "customer.profiles", "customer.identities", "scores", "responses",
    *(offers_topic(channel) for channel in CHANNELS), "suppressions",
    "partner.features.raw", EXCHANGE_TO_PARTNER, EXCHANGE_TO_BANK,
]


def _dlq_owner(name: str) -> Owner:
    """The reader of a topic keeps its dead letters: the partner reads partner.* and exchange.to_partner."""
    return "partner" if name.startswith("partner") or name == EXCHANGE_TO_PARTNER else "bank"


_TOPICS += [
    TopicSpec(dlq_name(name), _dlq_owner(name), DeadLetter, f"dead letters of {name}")
    for name in _INPUTS_WITH_DLQ
]
TOPICS: dict[str, TopicSpec] = {spec.name: spec for spec in _TOPICS}


@dataclass(frozen=True)
class TopicUse:
    """One topic a service reads or writes, with the record it carries (a service's topics.py
    lists its uses; each is checked against this catalog when the module loads)."""

    name: str
    direction: Literal["reads", "writes"]
    message: type[Any] | None
    note: str = ""


def _use(name: str, direction: Literal["reads", "writes"], message: type[Any] | None, note: str) -> TopicUse:
    spec = TOPICS.get(name)
    if spec is None:
        raise KeyError(f"{name!r} is not a topic of the catalog (services/protocol/catalog.py)")
    if spec.message is not message:
        carried = spec.message.__name__ if spec.message else "raw JSON"
        raise TypeError(f"{name} carries {carried}, not {message.__name__ if message else 'raw JSON'}")
    return TopicUse(name, direction, message, note)


def reads(name: str, message: type[Any] | None, note: str = "") -> TopicUse:
    """
    >>> reads("scores", messages.CustomerScores).direction
    'reads'
    >>> reads("scores", messages.Offer)
    Traceback (most recent call last):
    ...
    TypeError: scores carries CustomerScores, not Offer
    """
    return _use(name, "reads", message, note)


def writes(name: str, message: type[Any] | None, note: str = "") -> TopicUse:
    return _use(name, "writes", message, note)


def topics_of(owner: Owner) -> list[TopicSpec]:
    return [spec for spec in TOPICS.values() if spec.owner == owner]


def all_topic_names(settings: Settings, owners: Sequence[str] = ("bank", "partner", "exchange")) -> list[str]:
    """Every topic of these owners, with the deployment's prefix (what the embedded stack creates)."""
    return [settings.topic(spec.name) for spec in TOPICS.values() if spec.owner in owners]
