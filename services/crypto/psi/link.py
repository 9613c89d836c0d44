"""One party's side of PSI alignment over the exchange topics, its state kept in its own Redis.

The bank opens a session (`open_session`: a psi_session message with the public parameters);
the partner joins it (`join_session`). Then, on both sides, `blind` sends step 1 for new ids and
`handle` answers the other side's step 1 or takes the answer to ours (steps 2 and 3), returning
the ids that have just joined the intersection. Messages travel as the protocol's classes in the
party's Avro codec (`wire`); what each reveals: services/protocol/kinds.py and `protocol`.

The PSI state (own raw ids and blinded points) is saved after every change under
`<prefix>psi:state` in the party's own Redis (`state`), so alignment carries on after a restart. One worker
per party runs alignment at a time: the state is one object (the exchange services run a single
active replica).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import redis.asyncio as aioredis

from services.core.avro import AvroCodec
from services.core.errors import ConfigError, ValidationError
from services.core.kafka import Outbound
from services.crypto.psi import wire
from services.crypto.psi.protocol import PsiError, PsiParty, PsiPartyKey, PsiRole, PsiSessionParams
from services.crypto.psi.state import state_from_bytes, state_to_bytes
from services.protocol.exchange import Party, envelope, open_payload
from services.protocol.exchange_messages import PsiBlindedIds, PsiDoublyBlindedIds, PsiSession
from services.protocol.kinds import kind_named
from services.protocol.stream_messages import ExchangeMessage

MAX_POINTS_PER_MESSAGE = 50_000
"""32 bytes a point: 1.6 MB a message, under the producer's request limit."""

PSI_PROCESSES = 1
"""Services blind on their own core; the PSI benchmark shows the pool for bulk alignment."""

T = TypeVar("T")


@dataclass
class AlignmentLink:
    redis: aioredis.Redis
    key_prefix: str
    party_name: Party
    codec: AvroCodec
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
        if saved is None:
            return
        if not isinstance(saved, bytes):
            raise ConfigError("the PSI state is bytes: its Redis client must not decode responses")
        self.party = PsiParty.restore(state_from_bytes(self.codec, saved), processes=PSI_PROCESSES)
        self._joined_mark = self.party.joined_count()

    async def save(self) -> None:
        if self.party is not None:
            await self.redis.set(self.state_key, state_to_bytes(self.codec, self.party.snapshot()))

    async def open_session(self, ttl_s: int | None = None) -> Outbound:
        """Bank: start a new session (a rotation ends the old one) and tell the partner its parameters."""
        params = PsiSessionParams.new() if ttl_s is None else PsiSessionParams.new(ttl_s=ttl_s)
        self.party = PsiParty(PsiPartyKey.generate(self.role, params), processes=PSI_PROCESSES)
        self._joined_mark = 0
        await self.save()
        return envelope(self.codec, wire.to_message(params), self.party_name, self.session_hex)

    async def join_session(self, message: ExchangeMessage) -> bool:
        """Partner: take the bank's session parameters. False if it is the session already joined."""
        session = open_payload(self.codec, message, PsiSession)
        params = _parse(lambda: wire.session_params(session))
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
        return [envelope(self.codec, wire.to_message(chunk), self.party_name, self.session_hex)
                for chunk in blinded.chunks(MAX_POINTS_PER_MESSAGE)]

    async def handle(self, message: ExchangeMessage) -> tuple[list[Outbound], dict[str, str]]:
        """Steps 2 and 3: answer the other side's blinded ids, or take the answer to ours.

        Returns the replies to send and our ids that joined the intersection, with join ids.
        """
        party = self._require_party()
        self.check_session(message)
        replies: list[Outbound] = []
        kind = kind_named(message.kind)
        if kind.message is PsiBlindedIds:
            blinded = open_payload(self.codec, message, PsiBlindedIds)
            answer = _parse(lambda: party.reblind(wire.blinded_ids(blinded)))
            replies.append(envelope(self.codec, wire.to_message(answer), self.party_name, self.session_hex,
                                    correlation_id=message.message_id))
        elif kind.message is PsiDoublyBlindedIds:
            doubly_blinded = open_payload(self.codec, message, PsiDoublyBlindedIds)
            _parse(lambda: party.receive(wire.doubly_blinded_ids(doubly_blinded)))
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


def _parse(step: Callable[[], T]) -> T:
    """PSI's own errors (bad points, wrong batch, expired session) become dead letters with the reason."""
    try:
        return step()
    except PsiError as error:
        raise ValidationError(f"PSI: {error}", reason="bad_psi_message") from error
