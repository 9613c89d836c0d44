"""ExchangeMessage: the one envelope every cross-party message travels in.

The envelope names the protocol step (`kind`); the payload is that step's own byte encoding.
Messages are keyed by session id, so one session's messages stay in order on one partition.
"""
from __future__ import annotations

import uuid
from typing import Literal

from services.protocol.catalog import EXCHANGE_TO_BANK, EXCHANGE_TO_PARTNER
from services.core.errors import ValidationError
from services.core.kafka import Outbound, now_ms
from services.protocol.stream_messages import ExchangeMessage

Party = Literal["bank", "partner"]
PSI_SESSION = "psi_session"
PSI_BLINDED = "psi_blinded"
PSI_DOUBLY_BLINDED = "psi_doubly_blinded"
SCORE_REQUEST = "score_request"
PARTIAL_SCORES = "partial_scores"
FEDLR_PREFIX = "fedlr_"
KINDS = frozenset({PSI_SESSION, PSI_BLINDED, PSI_DOUBLY_BLINDED, SCORE_REQUEST, PARTIAL_SCORES})
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024 - 4096  # under the producer's max request size, room for the envelope


def topic_to(receiver: Party) -> str:
    return EXCHANGE_TO_PARTNER if receiver == "partner" else EXCHANGE_TO_BANK


def other(party: Party) -> Party:
    return "bank" if party == "partner" else "partner"


def envelope(kind: str, sender: Party, session_id: str, payload: bytes, correlation_id: str = "") -> Outbound:
    """An Outbound to the other party carrying one protocol message.

    >>> out = envelope(PSI_SESSION, "bank", "ab", b"x")
    >>> out.topic, out.key, out.message.kind, out.message.sender
    ('exchange.to_partner', 'ab', 'psi_session', 'bank')
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"{kind} payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}; send it in chunks")
    message = ExchangeMessage(uuid.uuid4().hex, kind, sender, session_id, correlation_id, payload, now_ms())
    return Outbound(topic_to(other(sender)), session_id, message)


def check_incoming(message: ExchangeMessage, receiver: Party) -> None:
    """Refuse messages that are not from the other party or of an unknown kind (they go to the DLQ)."""
    if message.sender != other(receiver):
        raise ValidationError(f"message from {message.sender!r} on the {receiver}'s inbound topic", reason="wrong_sender")
    if message.kind not in KINDS and not message.kind.startswith(FEDLR_PREFIX):
        raise ValidationError(f"unknown exchange message kind {message.kind!r}", reason="unknown_kind")
