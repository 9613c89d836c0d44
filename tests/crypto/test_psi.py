"""ECDH PSI: exact intersections, identical join ids, incremental alignment, what crosses."""
from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core.avro import AvroCodec, SchemaStore
from services.core.config import REPO_ROOT
from services.crypto.psi import (
    BlindedIds,
    DoublyBlindedIds,
    PsiMessageError,
    PsiParty,
    PsiPartyKey,
    PsiRole,
    PsiSessionExpiredError,
    PsiSessionMismatchError,
    PsiSessionParams,
    wire,
)
from services.crypto.psi import protocol as psi
from services.crypto.psi.state import state_from_bytes, state_to_bytes
from services.protocol.exchange_messages import PsiBlindedIds

NOW_S = 1_700_000_000
CODEC = AvroCodec(SchemaStore(REPO_ROOT / "schemas"))
ids_strategy = st.sets(st.text(min_size=1, max_size=12), max_size=25)
settings_fast = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def clock() -> float:
    return NOW_S + 1


def session(seed: int = 0) -> tuple[PsiPartyKey, PsiPartyKey]:
    rng = random.Random(seed)
    params = PsiSessionParams.new(now_s=NOW_S, token_bytes=rng.randbytes)
    return (
        PsiPartyKey.generate(PsiRole.BANK, params, seed=rng.randbytes(64)),
        PsiPartyKey.generate(PsiRole.PARTNER, params, seed=rng.randbytes(64)),
    )


def parties(seed: int = 0) -> tuple[PsiParty, PsiParty]:
    bank_key, partner_key = session(seed)
    return PsiParty(bank_key, now_s=clock), PsiParty(partner_key, now_s=clock)


def exchange(bank: PsiParty, partner: PsiParty, bank_ids: list[str], partner_ids: list[str]) -> dict[PsiRole, list[bytes]]:
    """One round of the protocol through serialised messages; returns what each party received."""
    received: dict[PsiRole, list[bytes]] = {PsiRole.BANK: [], PsiRole.PARTNER: []}
    bank_blinded = wire.encode(CODEC, bank.blind(bank_ids))
    partner_blinded = wire.encode(CODEC, partner.blind(partner_ids))
    received[PsiRole.PARTNER].append(bank_blinded)
    received[PsiRole.BANK].append(partner_blinded)
    answer_to_bank = wire.encode(CODEC, partner.reblind(wire.decode_blinded(CODEC, bank_blinded)))
    answer_to_partner = wire.encode(CODEC, bank.reblind(wire.decode_blinded(CODEC, partner_blinded)))
    received[PsiRole.BANK].append(answer_to_bank)
    received[PsiRole.PARTNER].append(answer_to_partner)
    bank.receive(wire.decode_answer(CODEC, answer_to_bank))
    partner.receive(wire.decode_answer(CODEC, answer_to_partner))
    return received


def hash_to_group(params: PsiSessionParams, raw_id: str) -> bytes:
    """H(id) unblinded, as anyone who knew the salt could compute it for a guessed id."""
    return psi._from_hash(hashlib.sha512(params.hash_prefix() + raw_id.encode()).digest())


@settings_fast
@given(bank_ids=ids_strategy, partner_ids=ids_strategy)
def test_psi_returns_exactly_the_true_intersection_with_identical_join_ids_on_both_sides(
    bank_ids: set[str], partner_ids: set[str]
) -> None:
    bank, partner = parties()
    exchange(bank, partner, sorted(bank_ids), sorted(partner_ids))
    bank_alignment, partner_alignment = bank.intersect(), partner.intersect()
    assert set(bank_alignment.join_ids) == bank_ids & partner_ids
    assert dict(bank_alignment.join_ids) == dict(partner_alignment.join_ids)
    assert bank_alignment.intersection_size == partner_alignment.intersection_size == len(bank_ids & partner_ids)
    assert len(set(bank_alignment.join_ids.values())) == bank_alignment.intersection_size


@settings_fast
@given(
    bank_ids=ids_strategy,
    partner_ids=ids_strategy,
    later_fraction=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
def test_incremental_alignment_of_new_ids_gives_the_same_join_ids_as_a_full_run(
    bank_ids: set[str], partner_ids: set[str], later_fraction: float, seed: int
) -> None:
    bank_key, partner_key = session(seed)
    full_bank, full_partner = PsiParty(bank_key, now_s=clock), PsiParty(partner_key, now_s=clock)
    exchange(full_bank, full_partner, sorted(bank_ids), sorted(partner_ids))

    rng = random.Random(seed)
    bank_order, partner_order = rng.sample(sorted(bank_ids), len(bank_ids)), rng.sample(sorted(partner_ids), len(partner_ids))
    bank_cut, partner_cut = int(len(bank_order) * later_fraction), int(len(partner_order) * (1 - later_fraction))
    bank, partner = PsiParty(bank_key, now_s=clock), PsiParty(partner_key, now_s=clock)
    exchange(bank, partner, bank_order[:bank_cut], partner_order[:partner_cut])
    # New customers arrive on each side, one side at a time, after a restart of the bank.
    bank = PsiParty.restore(state_from_bytes(CODEC, state_to_bytes(CODEC, bank.snapshot())), now_s=clock)
    bank.receive(partner.reblind(bank.blind(bank_order[bank_cut:])))
    partner.receive(bank.reblind(partner.blind(partner_order[partner_cut:])))

    assert dict(bank.intersect().join_ids) == dict(full_bank.intersect().join_ids)
    assert dict(partner.intersect().join_ids) == dict(full_partner.intersect().join_ids)


@settings_fast
@given(bank_ids=ids_strategy, partner_ids=ids_strategy)
def test_messages_a_party_receives_contain_no_hash_of_the_other_sides_raw_ids(
    bank_ids: set[str], partner_ids: set[str]
) -> None:
    bank, partner = parties()
    received = exchange(bank, partner, sorted(bank_ids), sorted(partner_ids))
    params = bank.key.params
    for receiver, senders_ids in ((PsiRole.BANK, partner_ids), (PsiRole.PARTNER, bank_ids)):
        everything_received = b"".join(received[receiver])
        for raw_id in senders_ids:
            encoded = raw_id.encode()
            telltales = [
                hashlib.sha256(encoded).digest(),
                hashlib.sha512(encoded).digest()[:32],
                hashlib.blake2b(encoded).digest()[:32],
                hash_to_group(params, raw_id),
            ]
            if len(encoded) >= 4:
                telltales.append(encoded)
            assert not any(telltale in everything_received for telltale in telltales), (receiver, raw_id)


@settings_fast
@given(bank_ids=ids_strategy, partner_ids=ids_strategy)
def test_neither_sides_outputs_include_the_other_sides_non_intersecting_ids(
    bank_ids: set[str], partner_ids: set[str]
) -> None:
    bank, partner = parties()
    exchange(bank, partner, sorted(bank_ids), sorted(partner_ids))
    assert not set(bank.intersect().join_ids) & (partner_ids - bank_ids)
    assert not set(partner.intersect().join_ids) & (bank_ids - partner_ids)
    bank_state = bank.snapshot()
    assert set(bank_state.own_doubly_blinded) == bank_ids
    assert len(bank_state.other_doubly_blinded) == len(partner_ids)


def test_blinded_ids_are_sent_in_a_random_order() -> None:
    bank_key, _ = session()
    ids = [f"c{number}" for number in range(5)]
    reference = PsiParty(bank_key, now_s=clock, random_bytes=lambda size: bytes(size)).blind(ids)
    first_point = next(point for point in reference.iter_points())
    positions = Counter(
        list(PsiParty(bank_key, now_s=clock).blind(ids).iter_points()).index(first_point) for _ in range(200)
    )
    assert set(positions) == set(range(5))


def test_chunked_answers_in_any_order_align_the_same_as_whole_messages() -> None:
    bank_ids = [f"c{number}" for number in range(40)]
    partner_ids = [f"c{number}" for number in range(20, 70)]
    bank, partner = parties()
    exchange(bank, partner, bank_ids, partner_ids)
    expected = dict(bank.intersect().join_ids)

    bank, partner = parties()
    bank_chunks = list(bank.blind(bank_ids).chunks(max_points=7))
    partner_chunks = list(partner.blind(partner_ids).chunks(max_points=9))
    answers_to_bank = [partner.reblind(chunk) for chunk in bank_chunks]
    answers_to_partner = [bank.reblind(chunk) for chunk in reversed(partner_chunks)]
    for answer in reversed(answers_to_bank):
        bank.receive(wire.decode_answer(CODEC, wire.encode(CODEC, answer)))
    for answer in answers_to_partner:
        partner.receive(answer)
    assert len(bank_chunks) == 6
    assert dict(bank.intersect().join_ids) == dict(partner.intersect().join_ids) == expected
    assert bank.snapshot().pending == {}


def test_the_process_pool_gives_the_same_points_as_the_inline_path() -> None:
    bank_key, partner_key = session()
    ids = [f"c{number}" for number in range(3 * 100)]
    fixed_order: Callable[[int], bytes] = bytes
    inline = PsiParty(bank_key, processes=1, random_bytes=fixed_order, now_s=clock).blind(ids)
    pooled_party = PsiParty(bank_key, processes=2, parallel_min_ids=1, random_bytes=fixed_order, now_s=clock)
    pooled = pooled_party.blind(ids)
    assert pooled == inline
    inline_answer = PsiParty(partner_key, processes=1, now_s=clock).reblind(inline)
    pooled_answer = PsiParty(partner_key, processes=2, parallel_min_ids=1, now_s=clock).reblind(inline)
    assert pooled_answer == inline_answer


def test_an_id_sent_twice_is_blinded_once() -> None:
    bank, _ = parties()
    assert len(bank.blind(["c1", "c1", "c2"])) == 2
    assert len(bank.blind(["c2", "c3"])) == 1


def test_a_party_refuses_a_message_from_another_session() -> None:
    bank, _ = parties(seed=1)
    _, other_partner = parties(seed=2)
    with pytest.raises(PsiSessionMismatchError, match="session"):
        bank.reblind(other_partner.blind(["c1"]))


def test_a_party_refuses_to_reblind_its_own_message() -> None:
    bank, _ = parties()
    with pytest.raises(PsiSessionMismatchError, match="sent itself"):
        bank.reblind(bank.blind(["c1"]))


def test_a_party_refuses_to_work_after_the_session_expires() -> None:
    bank_key, _ = session()
    expired = PsiParty(bank_key, now_s=lambda: bank_key.params.expires_at_s)
    with pytest.raises(PsiSessionExpiredError, match="rotate"):
        expired.blind(["c1"])


def test_an_invalid_point_is_rejected_with_its_position() -> None:
    bank, partner = parties()
    good = bank.blind(["c1", "c2"])
    forged = BlindedIds(good.session_id, good.sender, good.batch_id, 0, good.point(0) + b"\xff" * 32)
    with pytest.raises(PsiMessageError, match="position 1"):
        partner.reblind(forged)


def test_an_answer_for_an_unknown_batch_or_out_of_range_is_rejected() -> None:
    bank, partner = parties()
    answer = partner.reblind(bank.blind(["c1"]))
    with pytest.raises(PsiMessageError, match="no batch 7"):
        bank.receive(DoublyBlindedIds(answer.session_id, answer.sender, 7, 0, answer.points))
    with pytest.raises(PsiMessageError, match="positions"):
        bank.receive(DoublyBlindedIds(answer.session_id, answer.sender, answer.batch_id, 1, answer.points))


def test_truncated_or_mislabelled_messages_do_not_parse() -> None:
    bank, _ = parties()
    blinded = bank.blind(["c1", "c2"])
    encoded = wire.encode(CODEC, blinded)
    with pytest.raises(PsiMessageError, match="cannot decode"):
        wire.decode_blinded(CODEC, encoded[:-1])
    with pytest.raises(PsiMessageError, match=r"expected cipherstream\.exchange\.PsiDoublyBlindedIds"):
        wire.decode_answer(CODEC, encoded)
    ragged = CODEC.encode(PsiBlindedIds(blinded.session_id, "bank", 0, 0, blinded.points[:-1]))
    with pytest.raises(PsiMessageError, match="multiple of 32 bytes"):
        wire.decode_blinded(CODEC, ragged)


def test_join_ids_differ_between_sessions() -> None:
    first_bank, first_partner = parties(seed=1)
    second_bank, second_partner = parties(seed=2)
    exchange(first_bank, first_partner, ["c1"], ["c1"])
    exchange(second_bank, second_partner, ["c1"], ["c1"])
    assert first_bank.intersect().join_ids["c1"] != second_bank.intersect().join_ids["c1"]


def test_the_secret_scalar_never_appears_in_a_repr_and_round_trips_as_bytes() -> None:
    bank_key, _ = session()
    assert bank_key.scalar.hex() not in repr(bank_key)
    assert PsiPartyKey.from_bytes(bank_key.to_bytes()) == bank_key
    state = PsiParty(bank_key, now_s=clock).snapshot()
    assert state_from_bytes(CODEC, state_to_bytes(CODEC, state)) == state
