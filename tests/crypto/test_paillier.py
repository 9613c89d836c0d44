"""The fast Paillier layer against phe, exactly: encrypt, add, scale, pack, unpack, decrypt both ways."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import phe
import pytest
from hypothesis import given, settings, strategies as st

from services.core.errors import ConfigError
from services.crypto.paillier import (
    FastEncryptor,
    KeyRing,
    ObfuscatorPool,
    Packer,
    PaillierPrivateKey,
    PaillierPublicKey,
    add_raw,
    decode_fixed,
    encode_fixed,
    generate_keypair,
    load_private_key,
    save_private_key,
    scalar_mul_raw,
    to_phe_encrypted,
)

PUBLIC, PRIVATE = generate_keypair(2048)
PHE_PRIVATE = PRIVATE.to_phe()
ENCRYPTOR = FastEncryptor(PUBLIC, ObfuscatorPool(PUBLIC, target_size=64, background=False))
EXPONENT = -8
VALUES = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda v: round(v * 16**8) / 16**8)
SCALARS = st.integers(min_value=-(2**40), max_value=2**40)
FAST = settings(max_examples=25, deadline=None)


@FAST
@given(VALUES)
def test_ours_decrypts_with_phe_and_phe_decrypts_with_ours(value: float) -> None:
    ours = ENCRYPTOR.encrypt_fixed([value], EXPONENT)[0]
    assert PHE_PRIVATE.decrypt(to_phe_encrypted(PUBLIC, ours, EXPONENT)) == value
    theirs = PUBLIC.to_phe().encrypt(value, precision=16**EXPONENT)
    assert PRIVATE.decrypt_fixed(theirs.ciphertext(be_secure=False), theirs.exponent) == PHE_PRIVATE.decrypt(theirs)


@FAST
@given(VALUES, VALUES)
def test_addition_matches_phe(first: float, second: float) -> None:
    a, b = ENCRYPTOR.encrypt_fixed([first, second], EXPONENT)
    ours = add_raw(PUBLIC, a, b)
    theirs = to_phe_encrypted(PUBLIC, a, EXPONENT) + to_phe_encrypted(PUBLIC, b, EXPONENT)
    assert PRIVATE.decrypt_fixed(ours, EXPONENT) == PHE_PRIVATE.decrypt(theirs) == first + second


@FAST
@given(VALUES, SCALARS)
def test_short_exponent_scalar_multiplication_matches_phe(value: float, scalar: int) -> None:
    ciphertext = ENCRYPTOR.encrypt_fixed([value], EXPONENT)[0]
    ours = scalar_mul_raw(PUBLIC, ciphertext, scalar)
    theirs = to_phe_encrypted(PUBLIC, ciphertext, EXPONENT) * scalar
    assert PRIVATE.decrypt_raw(ours) == PHE_PRIVATE.raw_decrypt(theirs.ciphertext(be_secure=False))
    assert PRIVATE.decrypt_fixed(ours, EXPONENT) == pytest.approx(value * scalar, rel=1e-12, abs=1e-12)


@FAST
@given(st.lists(st.integers(min_value=-(2**15) + 1, max_value=2**15 - 1), min_size=1, max_size=40),
       st.lists(st.integers(min_value=-(2**15) + 1, max_value=2**15 - 1), min_size=1, max_size=40))
def test_packed_ciphertexts_add_slot_by_slot_and_unpack_exactly(first: list[int], second: list[int]) -> None:
    packer = Packer(PUBLIC, value_bits=16, max_terms=2)
    count = min(len(first), len(second))
    a = ENCRYPTOR.encrypt_raw(packer.pack(first[:count]))
    b = ENCRYPTOR.encrypt_raw(packer.pack(second[:count]))
    total = PRIVATE.decrypt_raw(add_raw(PUBLIC, a, b))
    assert packer.unpack(total, count, terms=2) == [x + y for x, y in zip(first, second)]
    assert PHE_PRIVATE.raw_decrypt(add_raw(PUBLIC, a, b)) == total


def test_packing_states_its_capacity_and_refuses_what_does_not_fit() -> None:
    packer = Packer(PUBLIC, value_bits=32, max_terms=1024)
    assert packer.slots >= 40  # 2048-bit key: 40+ values of 32 bits with 10 guard bits
    with pytest.raises(ValueError):
        packer.pack([0] * (packer.slots + 1))
    with pytest.raises(OverflowError):
        packer.pack([2**31])
    with pytest.raises(OverflowError):
        packer.unpack(0, 1, terms=2048)


def test_fixed_point_encoding_is_phes() -> None:
    for value in (0.0, 1.5, -1.5, 123456.789, -1e-3):
        encoded = phe.EncodedNumber.encode(PUBLIC.to_phe(), value, precision=16**EXPONENT)
        assert encode_fixed(value, EXPONENT, PUBLIC) == encoded.encoding
        assert decode_fixed(encoded.encoding, EXPONENT, PUBLIC) == encoded.decode()


def test_pool_refills_in_the_background_and_concurrent_takes_get_distinct_obfuscators() -> None:
    with ObfuscatorPool(PUBLIC, target_size=32, background=True) as pool:
        taken: list[int] = []
        lock = threading.Lock()

        def take() -> None:
            got = pool.take_many(20)
            with lock:
                taken.extend(got)

        threads = [threading.Thread(target=take) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(taken) == 80 and len(set(taken)) == 80
        encryptor = FastEncryptor(PUBLIC, pool)
        assert PRIVATE.decrypt_fixed(encryptor.encrypt_fixed([2.5], EXPONENT)[0], EXPONENT) == 2.5


def test_key_files_round_trip_with_private_mode_and_rotation_keeps_old_keys(tmp_path: Path) -> None:
    path = tmp_path / "bank.key"
    save_private_key(path, PRIVATE)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_private_key(path) == PRIVATE
    ring = KeyRing(tmp_path / "ring")
    first = ring.rotate()
    ciphertext = FastEncryptor(ring.public(first)).encrypt_raw(42)
    second = ring.rotate()
    assert ring.current()[0] == second != first and ring.key_ids() == sorted([first, second])
    assert ring.get(first).decrypt_raw(ciphertext) == 42


def test_corrupt_or_foreign_key_files_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.key").write_text("{not json")
    with pytest.raises(ConfigError, match="not a paillier-private key file"):
        load_private_key(tmp_path / "bad.key")
    with pytest.raises(ConfigError, match="does not match"):
        PaillierPrivateKey(PaillierPublicKey(PUBLIC.n), PRIVATE.p, PRIVATE.p)
    with pytest.raises(ConfigError, match="2048 or 3072"):
        generate_keypair(1024)


def test_3072_bit_keys_work() -> None:
    public, private = generate_keypair(3072)
    assert public.bits == 3072
    encryptor = FastEncryptor(public)
    assert private.decrypt_fixed(encryptor.encrypt_fixed([-7.25], EXPONENT)[0], EXPONENT) == -7.25
