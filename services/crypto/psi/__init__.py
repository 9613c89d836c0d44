"""ID alignment by ECDH private set intersection over ristretto255.

- `protocol`: keys, session parameters, hash-to-group and `PsiParty`, one side of the protocol,
  with the threat model (what each side learns).
- `wire`: the party's parameters and point batches to and from the protocol's message classes
  (services/protocol/exchange_messages.py), which the Avro codec encodes.
- `state`: the party's state as it keeps it in its own Redis (never sent).
- `link`: one party's side over the exchange topics.
"""
from services.crypto.psi.protocol import (
    DEFAULT_SESSION_TTL_S,
    POINT_BYTES,
    BlindedIds,
    DoublyBlindedIds,
    PsiAlignment,
    PsiError,
    PsiMessageError,
    PsiParty,
    PsiPartyKey,
    PsiPartyState,
    PsiRole,
    PsiSessionExpiredError,
    PsiSessionMismatchError,
    PsiSessionParams,
)

__all__ = [
    "DEFAULT_SESSION_TTL_S",
    "POINT_BYTES",
    "BlindedIds",
    "DoublyBlindedIds",
    "PsiAlignment",
    "PsiError",
    "PsiMessageError",
    "PsiParty",
    "PsiPartyKey",
    "PsiPartyState",
    "PsiRole",
    "PsiSessionExpiredError",
    "PsiSessionMismatchError",
    "PsiSessionParams",
]
