"""A party's PSI state as it keeps it in its own Redis: local, never sent to the other party.

`PsiParty.snapshot()` gives a `PsiPartyState`; `state_to_bytes` stores it as a
`cipherstream.PsiPartyState` record (schemas/psi_party_state.avsc) in the same Avro codec and
wire format as everything else, so a stored state names its schema version and stays readable
after a compatible change. It holds the party's secret scalar and its own raw ids (identity
hashes): it belongs where the party keeps its customer data.

Points are packed (32 bytes each, one `bytes` field for all of them), so a million ids' state is
one array of strings and two blobs.

>>> from services.core.avro import AvroCodec, SchemaStore
>>> from services.core.config import REPO_ROOT
>>> from services.crypto.psi.protocol import PsiParty, PsiPartyKey, PsiRole, PsiSessionParams
>>> codec = AvroCodec(SchemaStore(REPO_ROOT / "schemas"))
>>> bank = PsiParty(PsiPartyKey.generate(PsiRole.BANK, PsiSessionParams.new(now_s=0)), now_s=lambda: 1)
>>> _ = bank.blind(["c1"])
>>> state = bank.snapshot()
>>> state_from_bytes(codec, state_to_bytes(codec, state)) == state
True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from services.core.avro import AvroCodec
from services.core.errors import MessageError
from services.crypto.psi.protocol import (
    POINT_BYTES,
    PsiError,
    PsiPartyKey,
    PsiPartyState,
    PsiRole,
    PsiSessionParams,
)
from services.protocol.exchange_messages import Party


@dataclass(frozen=True, slots=True)
class PsiPendingBatch:
    batch_id: int
    ids: tuple[str, ...]
    answered: bytes


@dataclass(frozen=True, slots=True)
class StoredPsiState:
    """The record of schemas/psi_party_state.avsc (the scalar is left out of repr, as in `PsiPartyKey`)."""

    SCHEMA: ClassVar[str] = "cipherstream.PsiPartyState"
    role: Party
    session_id: bytes
    salt: bytes
    created_at_s: int
    expires_at_s: int
    scalar: bytes = field(repr=False)
    next_batch_id: int
    pending: tuple[PsiPendingBatch, ...]
    own_ids: tuple[str, ...]
    own_points: bytes
    other_points: bytes


_PARTY_OF_ROLE: dict[PsiRole, Party] = {PsiRole.BANK: "bank", PsiRole.PARTNER: "partner"}


def state_to_bytes(codec: AvroCodec, state: PsiPartyState) -> bytes:
    key, params = state.key, state.key.params
    record = StoredPsiState(
        _PARTY_OF_ROLE[key.role], params.session_id, params.salt, params.created_at_s, params.expires_at_s,
        key.scalar, state.next_batch_id,
        tuple(PsiPendingBatch(batch_id, ids, answered) for batch_id, (ids, answered) in sorted(state.pending.items())),
        tuple(state.own_doubly_blinded), b"".join(state.own_doubly_blinded.values()),
        b"".join(sorted(state.other_doubly_blinded)),
    )
    return codec.encode(record)


def state_from_bytes(codec: AvroCodec, encoded: bytes) -> PsiPartyState:
    try:
        record = codec.decode(encoded, StoredPsiState)
    except MessageError as error:
        raise PsiError(f"not a stored PSI state: {error}") from error
    if len(record.own_points) != POINT_BYTES * len(record.own_ids) or len(record.other_points) % POINT_BYTES:
        raise PsiError("stored PSI state: the points do not match the ids")
    if any(len(batch.answered) != len(batch.ids) for batch in record.pending):
        raise PsiError("stored PSI state: a pending batch's marks do not match its ids")
    role = PsiRole.BANK if record.role == "bank" else PsiRole.PARTNER
    key = PsiPartyKey(role, PsiSessionParams(record.session_id, record.salt, record.created_at_s, record.expires_at_s),
                      record.scalar)
    own, other = record.own_points, record.other_points
    return PsiPartyState(
        key,
        record.next_batch_id,
        {batch.batch_id: (batch.ids, batch.answered) for batch in record.pending},
        {own_id: own[at:at + POINT_BYTES] for own_id, at in zip(record.own_ids, range(0, len(own), POINT_BYTES))},
        frozenset(other[at:at + POINT_BYTES] for at in range(0, len(other), POINT_BYTES)),
    )
