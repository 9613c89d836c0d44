"""PSI on the wire: `PsiParty`'s session parameters and point batches to and from the protocol's
message classes (services/protocol/exchange_messages.py), which the one Avro codec encodes.

What crosses is exactly the protocol's: the session's public parameters, and batches of 32-byte
points packed in one `bytes` field (about 30 bytes of framing per message, whatever its size).
A message that does not decode, or decodes to something `PsiParty` cannot take (a point count
that is not whole, a session id of the wrong length, an unknown sender), is a `PsiMessageError`.

>>> from services.core.avro import AvroCodec, SchemaStore
>>> from services.core.config import REPO_ROOT
>>> from services.crypto.psi.protocol import PsiParty, PsiPartyKey
>>> codec = AvroCodec(SchemaStore(REPO_ROOT / "schemas"))
>>> params = PsiSessionParams.new(now_s=0)
>>> bank = PsiParty(PsiPartyKey.generate(PsiRole.BANK, params), now_s=lambda: 1)
>>> blinded = bank.blind(["c1", "c2", "c3"])
>>> encoded = encode(codec, blinded)
>>> len(encoded) - len(blinded.points), decode_blinded(codec, encoded) == blinded
(26, True)
>>> decode_session(codec, encode(codec, params)) == params
True
"""
from __future__ import annotations

from typing import overload

from services.core.avro import AvroCodec
from services.core.errors import MessageError
from services.crypto.psi.protocol import (
    BlindedIds,
    DoublyBlindedIds,
    PsiMessageError,
    PsiRole,
    PsiSessionParams,
)
from services.protocol.exchange_messages import Party, PsiBlindedIds, PsiDoublyBlindedIds, PsiSession

_PARTY_OF_ROLE: dict[PsiRole, Party] = {PsiRole.BANK: "bank", PsiRole.PARTNER: "partner"}
_ROLE_OF_PARTY: dict[str, PsiRole] = {party: role for role, party in _PARTY_OF_ROLE.items()}


@overload
def to_message(value: PsiSessionParams) -> PsiSession: ...
@overload
def to_message(value: BlindedIds) -> PsiBlindedIds: ...
@overload
def to_message(value: DoublyBlindedIds) -> PsiDoublyBlindedIds: ...
def to_message(value: PsiSessionParams | BlindedIds | DoublyBlindedIds) -> PsiSession | PsiBlindedIds | PsiDoublyBlindedIds:
    """The protocol message that carries `value` to the other party."""
    if isinstance(value, PsiSessionParams):
        return PsiSession(value.session_id, value.salt, value.created_at_s, value.expires_at_s)
    message_type = PsiBlindedIds if isinstance(value, BlindedIds) else PsiDoublyBlindedIds
    return message_type(value.session_id, _PARTY_OF_ROLE[value.sender], value.batch_id, value.offset, value.points)


def session_params(message: PsiSession) -> PsiSessionParams:
    return PsiSessionParams(message.session_id, message.salt, message.created_at_s, message.expires_at_s)


def blinded_ids(message: PsiBlindedIds) -> BlindedIds:
    return BlindedIds(message.session_id, _role(message.sender), message.batch_id, message.offset, message.points)


def doubly_blinded_ids(message: PsiDoublyBlindedIds) -> DoublyBlindedIds:
    return DoublyBlindedIds(message.session_id, _role(message.sender), message.batch_id, message.offset,
                            message.points)


def _role(sender: str) -> PsiRole:
    role = _ROLE_OF_PARTY.get(sender)
    if role is None:
        raise PsiMessageError(f"unknown sender {sender!r}")
    return role


def encode(codec: AvroCodec, value: PsiSessionParams | BlindedIds | DoublyBlindedIds) -> bytes:
    """The payload bytes of `value` (Confluent wire format), as an exchange message carries them."""
    return codec.encode(to_message(value))


def decode_session(codec: AvroCodec, payload: bytes) -> PsiSessionParams:
    return session_params(_decode(codec, payload, PsiSession))


def decode_blinded(codec: AvroCodec, payload: bytes) -> BlindedIds:
    return blinded_ids(_decode(codec, payload, PsiBlindedIds))


def decode_answer(codec: AvroCodec, payload: bytes) -> DoublyBlindedIds:
    return doubly_blinded_ids(_decode(codec, payload, PsiDoublyBlindedIds))


@overload
def _decode(codec: AvroCodec, payload: bytes, message_type: type[PsiSession]) -> PsiSession: ...
@overload
def _decode(codec: AvroCodec, payload: bytes, message_type: type[PsiBlindedIds]) -> PsiBlindedIds: ...
@overload
def _decode(codec: AvroCodec, payload: bytes, message_type: type[PsiDoublyBlindedIds]) -> PsiDoublyBlindedIds: ...
def _decode(codec: AvroCodec, payload: bytes,
            message_type: type[PsiSession] | type[PsiBlindedIds] | type[PsiDoublyBlindedIds]
            ) -> PsiSession | PsiBlindedIds | PsiDoublyBlindedIds:
    try:
        return codec.decode(payload, message_type)
    except MessageError as error:
        raise PsiMessageError(f"not a {message_type.__name__}: {error}") from error
