"""What the exchange service and the partner service refuse: each refused message becomes a dead
letter with its own reason (the kind's, for a payload that does not decode), the rest of its batch
goes on, and a replica that has just taken over carries on the saved PSI session."""
from __future__ import annotations

import redis.asyncio as aioredis

from services.core.avro import AvroCodec
from services.core.config import Settings
from services.core.errors import MessageError
from services.core.kafka import HandlerResult, Inbound
from services.crypto.psi.link import AlignmentLink
from services.exchange.app import BankExchange
from services.partner.app import PartnerService
from services.partner.store import PartnerStore
from services.protocol.identity import id_hash
from services.protocol.stream_messages import CustomerIdentity, ExchangeMessage


def inbound(message: ExchangeMessage) -> Inbound[ExchangeMessage]:
    return Inbound(message, message.session_id.encode(), "exchange", 0, 0, 0, None)


def reasons(results: list[HandlerResult]) -> list[str | None]:
    return [result.reason if isinstance(result, MessageError) else None for result in results]


def forged(kind: str, sender: str, session_id: str, payload: bytes = b"\x00\x00\x00\x00\x01junk") -> ExchangeMessage:
    return ExchangeMessage("m-forged", kind, sender, session_id, "", payload, 0)


async def test_each_refused_message_is_a_dead_letter_with_its_reason_and_a_new_replica_carries_on(
    settings: Settings, codec: AvroCodec,
) -> None:
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    prefix = settings.redis_key_prefix
    bank = BankExchange(redis, prefix + "b:", codec)
    partner_link = AlignmentLink(redis, prefix + "p:", "partner", codec)
    identity = CustomerIdentity("C1", "110105194912310021", 0)
    [sent] = await bank.identities([Inbound(identity, b"C1", "t", 0, 0, 0, None)])
    assert isinstance(sent, list)
    session, bank_blinded = (out.message for out in sent)
    assert (session.kind, bank_blinded.kind) == ("psi_session", "psi_blinded")
    await partner_link.join_session(session)
    [partner_blinded] = await partner_link.blind([id_hash(identity.national_id)])
    [answer_to_bank], _ = await partner_link.handle(bank_blinded)

    # A replica that has just taken the lease over: its first messages are the partner's.
    standby = BankExchange(redis, prefix + "b:", codec)
    session_id = session.session_id
    results = await standby.exchange([
        inbound(forged("psi_blinded", "partner", session_id)),
        inbound(partner_blinded.message),
        inbound(answer_to_bank.message),
        inbound(forged("partial_scores", "partner", session_id)),
        inbound(forged("nonsense", "partner", session_id)),
        inbound(forged("psi_blinded", "bank", session_id)),
        inbound(forged("fedlr_plan", "partner", session_id)),
        inbound(forged("psi_doubly_blinded", "partner", "ff" * 16)),
    ])
    assert reasons(results) == ["bad_psi_message", None, None, "bad_partial_scores", "unknown_kind", "wrong_sender",
                                "wrong_sender", "stale_session"]
    assert [[out.message.kind for out in result] for result in results[1:3]] == [  # type: ignore[union-attr]
        ["psi_doubly_blinded"], ["score_request"]]
    # Alone in its batch, a refused message is a dead letter too, not an error out of the handler.
    assert reasons(await standby.exchange([inbound(forged("psi_blinded", "partner", session_id))])) == [
        "bad_psi_message"]

    partner = PartnerService(PartnerStore(redis, prefix + "p:"), AlignmentLink(redis, prefix + "p:", "partner", codec),
                             codec)
    results = await partner.exchange([
        inbound(forged("score_request", "bank", session_id)),
        inbound(forged("fedlr_start", "bank", session_id)),
        inbound(forged("fedlr_plan", "bank", session_id)),
        inbound(forged("fedlr_masked", "bank", session_id)),
        inbound(forged("psi_session", "bank", session_id)),
    ])
    assert reasons(results) == ["bad_score_request", "bad_fedlr_message", "unknown_training_run", "wrong_sender",
                                "bad_psi_message"]
    await redis.aclose()
