"""ExchangeMessage: the one envelope every cross-party message travels in.

The envelope names the protocol step (`kind`, services/protocol/kinds.py); the payload is that
step's message (services/protocol/exchange_messages.py) in the Confluent wire format, encoded by
the same Avro codec as every topic. Messages are keyed by session id, so one session's messages
stay in order on one partition.
"""
from __future__ import annotations

import uuid
from typing import TypeVar

from services.core.avro import HEADER, AvroCodec
from services.core.errors import SchemaError, ValidationError
from services.core.kafka import Outbound, now_ms
from services.protocol.catalog import EXCHANGE_TO_BANK, EXCHANGE_TO_PARTNER
from services.protocol.exchange_messages import EXCHANGE_MESSAGE_TYPES, ExchangePayload, Party
from services.protocol.kinds import Kind, kind_named, kind_of
from services.protocol.stream_messages import ExchangeMessage

__all__ = ["MAX_PAYLOAD_BYTES", "Party", "check_incoming", "decode_any", "decode_payload", "envelope", "open_payload",
           "other", "topic_to"]

P = TypeVar("P", bound=ExchangePayload)
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024 - 4096  # under the producer's max request size, room for the envelope
_BY_SCHEMA: dict[str, type[ExchangePayload]] = {message_type.SCHEMA: message_type for message_type in EXCHANGE_MESSAGE_TYPES}


def topic_to(receiver: Party) -> str:
    return EXCHANGE_TO_PARTNER if receiver == "partner" else EXCHANGE_TO_BANK


def other(party: Party) -> Party:
    return "bank" if party == "partner" else "partner"


def envelope(codec: AvroCodec, message: ExchangePayload, sender: Party, session_id: str,
             correlation_id: str = "") -> Outbound:
    """An Outbound to the other party carrying one protocol message, of the kind that carries its class.

    >>> from services.core.config import REPO_ROOT
    >>> from services.core.avro import SchemaStore
    >>> from services.protocol.exchange_messages import ScoreRequest
    >>> codec = AvroCodec(SchemaStore(REPO_ROOT / "schemas"))
    >>> out = envelope(codec, ScoreRequest.of(["ab" * 16]), "bank", "cd")
    >>> out.topic, out.key, out.message.kind, out.message.sender
    ('exchange.to_partner', 'cd', 'score_request', 'bank')
    >>> open_payload(codec, out.message, ScoreRequest).join_ids
    ('abababababababababababababababab',)
    """
    kind = kind_of(type(message))
    if not kind.may_send(sender):
        raise ValueError(f"{kind.name} goes {kind.direction}: the {sender} does not send it")
    payload = codec.encode(message)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"{kind.name} payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}; send it in chunks")
    envelope_message = ExchangeMessage(uuid.uuid4().hex, kind.name, sender, session_id, correlation_id, payload, now_ms())
    return Outbound(topic_to(other(sender)), session_id, envelope_message)


def check_incoming(message: ExchangeMessage, receiver: Party) -> Kind:
    """The kind of a message from the other party; one from the wrong side or of a kind not in the
    table is refused (it goes to the DLQ).

    >>> message = ExchangeMessage("m1", "fedlr_masked", "bank", "ab", "", b"", 0)
    >>> check_incoming(message, "partner")
    Traceback (most recent call last):
    ...
    services.core.errors.ValidationError: fedlr_masked goes partner -> bank: not from the bank
    """
    if message.sender != other(receiver):
        raise ValidationError(f"message from {message.sender!r} on the {receiver}'s inbound topic", reason="wrong_sender")
    kind = kind_named(message.kind)
    if not kind.may_send(other(receiver)):
        raise ValidationError(f"{kind.name} goes {kind.direction}: not from the {message.sender}", reason="wrong_sender")
    return kind


def decode_payload(codec: AvroCodec, payload: bytes, message_type: type[P]) -> P:
    """A payload as `message_type`; bytes that do not decode as it are a ValidationError with its
    kind's dead-letter reason (bad_psi_message, bad_score_request, bad_partial_scores, bad_fedlr_message)."""
    try:
        return codec.decode(payload, message_type)
    except SchemaError as error:
        raise ValidationError(f"malformed {message_type.__name__}: {error}", reason=message_type.MALFORMED) from error


def open_payload(codec: AvroCodec, message: ExchangeMessage, message_type: type[P]) -> P:
    """The payload of an envelope whose kind carries `message_type`."""
    kind = kind_named(message.kind)
    if kind.message is not message_type:
        raise ValidationError(f"{kind.name} carries {kind.message.__name__}, not {message_type.__name__}",
                              reason=kind.malformed_reason)
    return decode_payload(codec, message.payload, message_type)


def decode_any(codec: AvroCodec, payload: bytes) -> ExchangePayload:
    """Any exchange message by the schema id in its header: for transcripts and audits of what crossed.

    >>> from services.core.config import REPO_ROOT
    >>> from services.core.avro import SchemaStore
    >>> from services.protocol.exchange_messages import TrainingFinish
    >>> codec = AvroCodec(SchemaStore(REPO_ROOT / "schemas"))
    >>> decode_any(codec, codec.encode(TrainingFinish()))
    TrainingFinish()
    """
    if len(payload) < HEADER.size:
        raise ValidationError("exchange payload shorter than the wire format header", reason="bad_exchange_payload")
    try:
        name = codec.store.version_by_id(HEADER.unpack_from(payload)[1]).name
    except SchemaError as error:
        raise ValidationError(f"not an exchange message: {error}", reason="bad_exchange_payload") from error
    message_type = _BY_SCHEMA.get(name)
    if message_type is None:
        raise ValidationError(f"{name} is not an exchange message", reason="bad_exchange_payload")
    return decode_payload(codec, payload, message_type)
