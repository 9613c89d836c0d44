"""Packing: values unpack unchanged, packed ciphertexts add slot by slot up to the stated bound."""
from __future__ import annotations

import phe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.crypto.paillier import (
    FastEncryptor,
    ObfuscatorPool,
    Packer,
    PackingError,
    PlaintextOverflowError,
    add_raw,
    generate_keypair,
    scalar_mul_raw,
    to_phe_encrypted,
)

PUBLIC, PRIVATE = generate_keypair(2048)
PHE_PRIVATE = PRIVATE.to_phe()
ENCRYPTOR = FastEncryptor(PUBLIC, ObfuscatorPool(PUBLIC, target_size=0, background=False))
PACKER = Packer.for_values(PUBLIC, value_bits=16, max_terms=8)
SLOT_VALUES = st.integers(min_value=-PACKER.max_value, max_value=PACKER.max_value)
FAST = settings(max_examples=15, deadline=None)


@FAST
@given(st.lists(st.lists(SLOT_VALUES, min_size=1, max_size=PACKER.slots), min_size=1, max_size=8))
def test_sums_of_up_to_max_terms_packed_ciphertexts_unpack_slot_by_slot(rows: list[list[int]]) -> None:
    count = max(map(len, rows))
    ciphertexts = [ENCRYPTOR.encrypt_raw(PACKER.pack(row)) for row in rows]
    total = ciphertexts[0]
    for ciphertext in ciphertexts[1:]:
        total = add_raw(PUBLIC, total, ciphertext)
    expected = [sum(row[i] for row in rows if i < len(row)) for i in range(count)]
    assert PACKER.unpack(PRIVATE.decrypt_raw(total), count) == expected
    # phe reads the packed plaintext as the integer sum(v_i * 2^(i * slot_bits)): same slots.
    as_phe = PHE_PRIVATE.decrypt(to_phe_encrypted(PUBLIC, total, 0))
    assert PACKER.unpack(as_phe % PUBLIC.n, count) == expected


@FAST
@given(st.lists(SLOT_VALUES, min_size=1, max_size=PACKER.slots), st.integers(min_value=-8, max_value=8))
def test_a_packed_ciphertext_scales_slot_by_slot(values: list[int], scalar: int) -> None:
    scaled = scalar_mul_raw(PUBLIC, ENCRYPTOR.encrypt_raw(PACKER.pack(values)), scalar)
    assert PACKER.unpack(PRIVATE.decrypt_raw(scaled), len(values)) == [scalar * v for v in values]


@FAST
@given(st.lists(st.floats(min_value=-1000, max_value=1000, allow_nan=False), min_size=1, max_size=30))
def test_fixed_point_values_pack_like_phe_encodes_them(values: list[float]) -> None:
    packer = Packer.for_values(PUBLIC, value_bits=48, max_terms=2)
    ciphertext = ENCRYPTOR.encrypt_raw(packer.pack_fixed(values, -8))
    doubled = add_raw(PUBLIC, ciphertext, ciphertext)
    expected = [2 * phe.EncodedNumber.encode(PUBLIC.to_phe(), v, precision=16.0**-8).decode() for v in values]
    assert packer.unpack_fixed(PRIVATE.decrypt_raw(doubled), -8, len(values)) == expected


def test_the_bound_holds_exactly_at_the_extremes() -> None:
    extremes = [PACKER.max_value, -PACKER.max_value] * (PACKER.slots // 2)
    plaintexts = [PACKER.pack(extremes)] * PACKER.max_terms
    assert PACKER.unpack(sum(plaintexts) % PUBLIC.n, len(extremes)) == [PACKER.max_terms * v for v in extremes]
    # One term more than stated carries into the next slot: the bound is real, not padding.
    over = (sum(plaintexts) + plaintexts[0]) % PUBLIC.n
    assert PACKER.unpack(over, len(extremes)) != [(PACKER.max_terms + 1) * v for v in extremes]


def test_capacity_is_stated_and_what_does_not_fit_is_refused() -> None:
    packer = Packer.for_values(PUBLIC, value_bits=32, max_terms=1024)
    assert (packer.slot_bits, packer.guard_bits, packer.slots) == (42, 10, 48)
    assert packer.slots * packer.slot_bits < PUBLIC.bits
    with pytest.raises(PackingError):
        packer.pack([0] * (packer.slots + 1))
    with pytest.raises(PlaintextOverflowError):
        packer.pack([2**31])
    with pytest.raises(PackingError):
        packer.pack([1.5])  # type: ignore[list-item]
    with pytest.raises(PackingError):
        Packer(PUBLIC, slot_bits=4, max_terms=1024)
    with pytest.raises(PlaintextOverflowError):
        packer.unpack(PUBLIC.n // 2)  # neither a positive nor a negative encoding
