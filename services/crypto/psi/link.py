"""One party's side of PSI alignment over the exchange topics, its state kept in its own Redis.

The bank opens a session (`open_session`: a psi_session message with the public parameters);
the partner joins it (`join_session`). Then, on both sides, `blind` sends step 1 for new ids and
`handle` answers the other side's step 1 or takes the answer to ours (steps 2 and 3), returning
the ids that have just joined the intersection. What each message reveals: services/crypto/psi/protocol.py.

The PSI state (own raw ids and blinded points) is saved after every change under
`<prefix>psi:state` in the party's own Redis, so alignment carries on after a restart. One worker
per party runs alignment at a time: the state is one object (the exchange services run a single
active replica).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis

from services.core.errors import ValidationError
from services.core.kafka import Outbound
from services.protocol.stream_messages import ExchangeMessage
from services.crypto.psi import (
    BlindedIds,
    DoublyBlindedIds,
    PsiError,
    PsiParty,
    PsiPartyKey,
    PsiPartyState,
    PsiRole,
    PsiSessionParams,
)
from services.protocol.exchange import PSI_BLINDED, PSI_DOUBLY_BLINDED, PSI_SESSION, Party, envelope

MAX_POINTS_PER_MESSAGE = 50_000
"""32 bytes a point: 1.6 MB a message, under the producer's request limit."""

PSI_PROCESSES = 1
"""Services blind on their own core; the PSI benchmark shows the pool for bulk alignment."""


@dataclass
class AlignmentLink:
    redis: aioredis.Redis
    key_prefix: str
    party_name: Party
    party: PsiParty | None = None
    _joined_mark: int = field(default=0)

    @property
    def state_key(self) -> str:
        return f"{self.key_prefix}psi:state"

    @property
    def role(self) -> PsiRole:
        return PsiRole.BANK if self.party_name == "bank" else PsiRole.PARTNER

    @property
    def session_hex(self) -> str:
        if self.party is None:
            raise ValidationError("no PSI session yet", reason="no_session")
        return self.party.session_id.hex()

    async def load(self) -> None:
        """Carry on from the saved state, if any."""
        saved = await self.redis.get(self.state_key)
        if saved is not None:
            self.party = PsiParty.restore(PsiPartyState.from_bytes(saved), processes=PSI_PROCESSES)
            self._joined_mark = self.party.joined_count()

    async def save(self) -> None:
        if self.party is not None:
            await self.redis.set(self.state_key, self.party.snapshot().to_bytes())

    async def open_session(self, ttl_s: int | None = None) -> Outbound:
        """Bank: start a new session (a rotation ends the old one) and tell the partner its parameters."""
        params = PsiSessionParams.new() if ttl_s is None else PsiSessionParams.new(ttl_s=ttl_s)
        self.party = PsiParty(PsiPartyKey.generate(self.role, params), processes=PSI_PROCESSES)
        self._joined_mark = 0
        await self.save()
        return envelope(PSI_SESSION, self.party_name, self.session_hex, params.to_bytes())

    async def join_session(self, message: ExchangeMessage) -> bool:
        """Partner: take the bank's session parameters. False if it is the session already joined."""
        params = _parse(PsiSessionParams.from_bytes, message.payload)
        if self.party is not None and self.party.session_id == params.session_id:
            return False
        self.party = PsiParty(PsiPartyKey.generate(self.role, params), processes=PSI_PROCESSES)
        self._joined_mark = 0
        await self.save()
        return True

    async def blind(self, ids: list[str]) -> list[Outbound]:
        """Step 1 for ids not sent before in this session (none if all were)."""
        party = self._require_party()
        blinded = party.blind(ids)
        if not len(blinded):
            return []
        await self.save()
        return [envelope(PSI_BLINDED, self.party_name, self.session_hex, chunk.to_bytes())
                for chunk in blinded.chunks(MAX_POINTS_PER_MESSAGE)]

    async def handle(self, message: ExchangeMessage) -> tuple[list[Outbound], dict[str, str]]:
        """Steps 2 and 3: answer the other side's blinded ids, or take the answer to ours.

        Returns the replies to send and our ids that joined the intersection, with join ids.
        """
        party = self._require_party()
        self.check_session(message)
        replies: list[Outbound] = []
        if message.kind == PSI_BLINDED:
            answer = _parse(lambda raw: party.reblind(BlindedIds.from_bytes(raw)), message.payload)  # type: ignore[arg-type]
            replies.append(envelope(PSI_DOUBLY_BLINDED, self.party_name, self.session_hex, answer.to_bytes(),
                                    correlation_id=message.message_id))
        elif message.kind == PSI_DOUBLY_BLINDED:
            _parse(lambda raw: party.receive(DoublyBlindedIds.from_bytes(raw)), message.payload)  # type: ignore[arg-type]
        else:
            raise ValidationError(f"{message.kind} is not a PSI step", reason="unknown_kind")
        joined = party.joined_after(self._joined_mark)
        self._joined_mark += len(joined)
        await self.save()
        return replies, joined

    def check_session(self, message: ExchangeMessage) -> None:
        """Join ids belong to one session: a message of another (older, or made up) is refused."""
        if message.session_id != self.session_hex:
            raise ValidationError(f"message of PSI session {message.session_id[:8]}.., ours is {self.session_hex[:8]}..",
                                  reason="stale_session")

    def _require_party(self) -> PsiParty:
        if self.party is None:
            raise ValidationError("no PSI session yet: the bank opens one", reason="no_session")
        return self.party


def _parse(parse, payload: bytes):  # type: ignore[no-untyped-def]
    """PSI's own errors (bad points, wrong batch, expired session) become dead letters with the reason."""
    try:
        return parse(payload)
    except PsiError as error:
        raise ValidationError(f"PSI: {error}", reason="bad_psi_message") from error
