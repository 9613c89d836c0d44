"""ID alignment by ECDH private set intersection over ristretto255 (the threat model: `protocol`).

- `protocol`: keys, session parameters, hash-to-group and `PsiParty`, one side of the protocol.
- `link`: one party's side over the exchange topics, its state kept in its own Redis.
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
