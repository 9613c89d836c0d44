"""PSI key rotation (runbook): the bank opens a new session, the partner joins it, both re-align
everyone from scratch; the intersection is the same, every join id is new, state survives restarts."""
from __future__ import annotations

import redis.asyncio as aioredis

from services.core.avro import AvroCodec
from services.core.config import Settings
from services.crypto.psi.link import AlignmentLink


async def _align(bank: AlignmentLink, partner: AlignmentLink, bank_ids: list[str], partner_ids: list[str]) -> dict[str, str]:
    joined: dict[str, str] = {}
    session = await bank.open_session()
    await partner.join_session(session.message)
    for blinded in await bank.blind(bank_ids):
        replies, _ = await partner.handle(blinded.message)
        for reply in replies:
            joined |= (await bank.handle(reply.message))[1]
    for blinded in await partner.blind(partner_ids):
        replies, _ = await bank.handle(blinded.message)
        joined |= _
        for reply in replies:
            await partner.handle(reply.message)
    return joined


async def test_rotation_realigns_with_new_join_ids_and_state_survives_a_restart(settings: Settings,
                                                                               codec: AvroCodec) -> None:
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    prefix = settings.redis_key_prefix
    bank = AlignmentLink(redis, prefix + "b:", "bank", codec)
    partner = AlignmentLink(redis, prefix + "p:", "partner", codec)
    bank_ids, partner_ids = [f"id{i}" for i in range(0, 60)], [f"id{i}" for i in range(40, 100)]
    first = await _align(bank, partner, bank_ids, partner_ids)
    assert set(first) == {f"id{i}" for i in range(40, 60)}

    restarted = AlignmentLink(redis, prefix + "b:", "bank", codec)
    await restarted.load()
    assert restarted.session_hex == bank.session_hex and restarted.party.joined_count() == 20  # type: ignore[union-attr]

    second = await _align(restarted, partner, bank_ids, partner_ids)  # rotation: a new session
    assert set(second) == set(first) and not set(second.values()) & set(first.values())
    assert restarted.session_hex != bank.session_hex
    await redis.aclose()
