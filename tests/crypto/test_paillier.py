"""The fast Paillier layer against phe, exactly: encode, encrypt, decrypt, add, scale both ways."""
from __future__ import annotations

import phe
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.crypto.paillier import (
    CiphertextError,
    DjnObfuscators,
    FastEncryptor,
    ObfuscatorPool,
    PaillierPrivateKey,
    PaillierPublicKey,
    PlaintextOverflowError,
    add_plain_raw,
    add_raw,
    decode_fixed,
    encode_fixed,
    generate_keypair,
    scalar_mul_raw,
    to_phe_encrypted,
)

# Key generation once per module; the obfuscator table once too (building it is the slow part).
PUBLIC, PRIVATE = generate_keypair(2048)
PHE_PUBLIC, PHE_PRIVATE = PUBLIC.to_phe(), PRIVATE.to_phe()
ENCRYPTOR = FastEncryptor(PUBLIC, ObfuscatorPool(PUBLIC, target_size=0, background=False))
FAST = settings(max_examples=20, deadline=None)
EXPONENTS = st.sampled_from([-12, -8, -4, -1, 0, 2])
VALUES = st.one_of(
    st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**80), max_value=2**80),
)


def phe_encoded(value: float, exponent: int) -> phe.EncodedNumber:
    # phe picks exponent = floor(log16(precision)); precision 16**exponent pins it to ours.
    encoded = phe.EncodedNumber.encode(PHE_PUBLIC, value, precision=16.0**exponent)
    assert encoded.exponent == exponent
    return encoded


@FAST
@given(VALUES, EXPONENTS)
def test_fixed_point_encoding_is_bit_for_bit_phes(value: float, exponent: int) -> None:
    encoded = phe_encoded(value, exponent)
    assert encode_fixed(value, exponent, PUBLIC) == encoded.encoding
    assert decode_fixed(encoded.encoding, exponent, PUBLIC) == float(encoded.decode())


@FAST
@given(VALUES, EXPONENTS)
@example(2**53 + 1, 0)  # an int past float precision: phe decrypts it exactly
def test_ours_decrypts_with_phe_and_phes_decrypts_with_ours(value: float, exponent: int) -> None:
    decoded = phe_encoded(value, exponent).decode()  # an int stays an int (exact past 2**53) in phe
    expected = float(decoded)  # ours decodes to float
    ours = ENCRYPTOR.encrypt_fixed([value], exponent)[0]
    assert PHE_PRIVATE.decrypt(to_phe_encrypted(PUBLIC, ours, exponent)) == decoded
    theirs = PHE_PUBLIC.encrypt(value, precision=16.0**exponent)
    for ciphertext in (theirs.ciphertext(be_secure=False), theirs.ciphertext(be_secure=True)):
        assert PRIVATE.decrypt_fixed(ciphertext, theirs.exponent) == expected


@FAST
@given(VALUES, VALUES, EXPONENTS)
def test_addition_matches_phe(first: float, second: float, exponent: int) -> None:
    a, b = ENCRYPTOR.encrypt_fixed([first, second], exponent)
    ours = add_raw(PUBLIC, a, b)
    theirs = to_phe_encrypted(PUBLIC, a, exponent) + to_phe_encrypted(PUBLIC, b, exponent)
    assert ours == theirs.ciphertext(be_secure=False)
    assert PRIVATE.decrypt_fixed(ours, exponent) == float(PHE_PRIVATE.decrypt(theirs))  # phe: int at exponent >= 0
    with_plain = add_plain_raw(PUBLIC, a, encode_fixed(second, exponent, PUBLIC))
    assert PRIVATE.decrypt_raw(with_plain) == PRIVATE.decrypt_raw(ours)


@FAST
@given(VALUES, st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), EXPONENTS,
       st.sampled_from([-8, -3, 0]))
def test_short_exponent_scalar_multiplication_is_phes_ciphertext(
    value: float, scalar: float, exponent: int, scalar_exponent: int
) -> None:
    ciphertext = ENCRYPTOR.encrypt_fixed([value], exponent)[0]
    encoded_scalar = phe_encoded(scalar, scalar_exponent)
    ours = scalar_mul_raw(PUBLIC, ciphertext, phe.EncodedNumber(PHE_PUBLIC, encoded_scalar.encoding, 0).decode())
    theirs = to_phe_encrypted(PUBLIC, ciphertext, exponent) * encoded_scalar
    assert theirs.exponent == exponent + scalar_exponent
    assert ours == theirs.ciphertext(be_secure=False)
    assert PRIVATE.decrypt_fixed(ours, exponent + scalar_exponent) == float(PHE_PRIVATE.decrypt(theirs))


@FAST
@given(st.integers(min_value=-(2**64), max_value=2**64), st.integers(min_value=-(2**64), max_value=2**64))
def test_negative_scalars_use_the_inverse_not_a_full_length_exponent(value: int, scalar: int) -> None:
    ciphertext = ENCRYPTOR.encrypt_raw(encode_fixed(value, 0, PUBLIC))
    product = scalar_mul_raw(PUBLIC, ciphertext, scalar)
    assert PRIVATE.decrypt_fixed(product, 0) == float(value * scalar)
    assert PHE_PRIVATE.decrypt(to_phe_encrypted(PUBLIC, product, 0)) == value * scalar


def test_obfuscators_are_nth_residues_made_from_a_short_exponent() -> None:
    maker = DjnObfuscators(PUBLIC, random_bits=lambda bits: (1 << bits) - 12345)
    assert maker.exponent_bits == 256
    assert maker.make() == pow(maker.h_s, (1 << 256) - 12345, PUBLIC.nsquare)
    assert PRIVATE.decrypt_raw(int(maker.make())) == 0  # r^n encrypts zero
    half = DjnObfuscators(PUBLIC, exponent_bits=PUBLIC.bits // 2, random_bits=lambda bits: 3 << (bits - 2))
    assert half.make() == pow(half.h_s, 3 << 1022, PUBLIC.nsquare)
    encryptor = FastEncryptor(PUBLIC, ObfuscatorPool(PUBLIC, 0, background=False, maker=half))
    assert PHE_PRIVATE.decrypt(to_phe_encrypted(PUBLIC, encryptor.encrypt_fixed([-3.5], -2)[0], -2)) == -3.5


def test_fresh_encryptions_of_one_value_differ() -> None:
    first, second = ENCRYPTOR.encrypt_fixed([1.0, 1.0], -8)
    assert first != second
    assert PRIVATE.decrypt_raw(first) == PRIVATE.decrypt_raw(second)


def test_out_of_range_inputs_are_clear_errors() -> None:
    with pytest.raises(PlaintextOverflowError):
        ENCRYPTOR.encrypt_raw(PUBLIC.n)
    with pytest.raises(PlaintextOverflowError):
        ENCRYPTOR.encrypt_raw(-1)
    with pytest.raises(PlaintextOverflowError):
        encode_fixed(float("nan"), -8, PUBLIC)
    with pytest.raises(PlaintextOverflowError):
        encode_fixed(1e300, -300, PUBLIC)
    with pytest.raises(OverflowError):  # phe's exception type, for callers written against phe
        decode_fixed(PUBLIC.n // 2, -8, PUBLIC)
    with pytest.raises(CiphertextError):
        PRIVATE.decrypt_raw(PUBLIC.nsquare)


def test_keys_convert_to_and_from_phe_and_refuse_mismatched_factors() -> None:
    assert PaillierPrivateKey.from_phe(PHE_PRIVATE) == PRIVATE
    assert PaillierPublicKey.from_phe(PHE_PUBLIC) == PUBLIC
    assert PUBLIC.bits == 2048
    with pytest.raises(Exception, match="does not match"):
        PaillierPrivateKey(PUBLIC, PRIVATE.p, PRIVATE.p)
    with pytest.raises(Exception, match="2048 or 3072"):
        generate_keypair(1024)


def test_3072_bit_keys_encrypt_and_decrypt_with_phe() -> None:
    public, private = generate_keypair(3072)
    assert public.bits == 3072
    ciphertext = FastEncryptor(public).encrypt_fixed([-7.25], -4)[0]
    assert private.decrypt_fixed(ciphertext, -4) == -7.25
    assert private.to_phe().decrypt(to_phe_encrypted(public, ciphertext, -4)) == -7.25
