"""The naming rules core itself relies on: where a topic's dead letters go, which topics are
the exchange's (on the cluster both parties reach). Every topic is listed in protocol/catalog.py."""
from __future__ import annotations

EXCHANGE_TOPIC_PREFIX = "exchange."


def dlq_name(topic: str) -> str:
    """The dead-letter topic of a topic.

    >>> dlq_name("bank.events.raw")
    'dlq.bank.events.raw'
    """
    return f"dlq.{topic}"
