"""Shamir sharing: any k of n rebuild, k-1 fit every secret, corrupted or foreign shares are caught."""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.crypto.sharing import (
    BYTES_PER_ELEMENT,
    FLOATS_PRIME_BITS,
    NotEnoughSharesError,
    SecretShare,
    ShareCorruptedError,
    ShareMismatchError,
    ShareVerificationError,
    combine_floats,
    combine_shares,
    split_floats,
    split_secret,
)

settings_fast = settings(max_examples=60, deadline=None)


@st.composite
def threshold_schemes(draw: st.DrawFn) -> tuple[int, int]:
    share_count = draw(st.integers(1, 7))
    return draw(st.integers(1, share_count)), share_count


def recording(rng: random.Random, drawn: list[int]) -> Callable[[int], int]:
    def randbelow(bound: int) -> int:
        drawn.append(rng.randrange(bound))
        return drawn[-1]

    return randbelow


def scripted(values: list[int]) -> Callable[[int], int]:
    remaining = iter(values)

    def randbelow(bound: int) -> int:
        value = next(remaining)
        assert 0 <= value < bound
        return value

    return randbelow


def polynomial_through(points: Sequence[tuple[int, int]], prime: int) -> list[int]:
    """Coefficients (constant first) of the polynomial of degree < len(points) through them."""
    coefficients = [0] * len(points)
    for i, (x_i, y_i) in enumerate(points):
        basis, denominator = [1], 1
        for j, (x_j, _) in enumerate(points):
            if j != i:
                # basis *= (X - x_j)
                basis = [(shifted - x_j * kept) % prime for shifted, kept in zip([0, *basis], [*basis, 0])]
                denominator = denominator * (x_i - x_j) % prime
        scale = y_i * pow(denominator, -1, prime) % prime
        coefficients = [(c + scale * b) % prime for c, b in zip(coefficients, basis)]
    return coefficients


@settings_fast
@given(secret=st.binary(max_size=300), scheme=threshold_schemes(), data=st.data())
def test_any_k_of_n_shares_rebuild_the_secret(secret: bytes, scheme: tuple[int, int], data: st.DataObject) -> None:
    threshold, share_count = scheme
    shares = split_secret(secret, threshold=threshold, share_count=share_count)
    chosen = data.draw(st.lists(st.sampled_from(shares), min_size=threshold, unique_by=lambda share: share.index))
    assert combine_shares(data.draw(st.permutations(chosen))) == secret


@settings_fast
@given(
    secrets_pair=st.integers(0, 200).flatmap(
        lambda length: st.tuples(st.binary(min_size=length, max_size=length), st.binary(min_size=length, max_size=length))
    ),
    scheme=threshold_schemes(),
    data=st.data(),
)
def test_fewer_than_threshold_shares_fit_every_other_secret_of_the_same_length(
    secrets_pair: tuple[bytes, bytes], scheme: tuple[int, int], data: st.DataObject
) -> None:
    """For the shares of secret s0 held by any k-1 custodians, and any other secret s1 of the
    same length, there are random coefficients that give those custodians the very same values
    for s1: so what k-1 custodians hold cannot tell s0 from s1."""
    secret, other_secret = secrets_pair
    threshold, share_count = scheme
    drawn: list[int] = []
    shares = split_secret(secret, threshold=threshold, share_count=share_count, randbelow=recording(random.Random(0), drawn))
    held = data.draw(st.lists(st.sampled_from(shares), min_size=threshold - 1, max_size=threshold - 1, unique_by=lambda share: share.index))

    prime = shares[0].prime
    split_id_and_nonce = drawn[:2]
    other_elements = [split_id_and_nonce[1]] + [
        int.from_bytes(other_secret[start : start + BYTES_PER_ELEMENT], "big")
        for start in range(0, len(other_secret), BYTES_PER_ELEMENT)
    ]
    script = list(split_id_and_nonce)
    for position, element in enumerate(other_elements):
        points = [(0, element)] + [(share.index, share.values[position]) for share in held]
        script.extend(polynomial_through(points, prime)[1:])
    other_shares = split_secret(other_secret, threshold=threshold, share_count=share_count, randbelow=scripted(script))

    for share in held:
        assert other_shares[share.index - 1].values == share.values
    assert combine_shares(other_shares[:threshold]) == other_secret


@settings_fast
@given(
    values=st.lists(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False), max_size=50),
    scheme=threshold_schemes(),
)
def test_float_vectors_rebuild_within_the_fixed_point_resolution(values: list[float], scheme: tuple[int, int]) -> None:
    threshold, share_count = scheme
    shares = split_floats(values, threshold=threshold, share_count=share_count)
    rebuilt = combine_floats(shares[-threshold:])
    assert len(rebuilt) == len(values)
    resolution = 2.0 ** -shares[0].frac_bits
    assert all(abs(got - want) <= resolution for got, want in zip(rebuilt, values))
    assert shares[0].prime_bits == FLOATS_PRIME_BITS


@settings_fast
@given(secret=st.binary(max_size=200), scheme=threshold_schemes())
def test_shares_survive_files_as_bytes_and_as_json(secret: bytes, scheme: tuple[int, int]) -> None:
    threshold, share_count = scheme
    shares = split_secret(secret, threshold=threshold, share_count=share_count)
    from_bytes = [SecretShare.from_bytes(share.to_bytes()) for share in shares]
    from_json = [SecretShare.from_json(share.to_json()) for share in shares]
    assert from_bytes == from_json == shares
    assert combine_shares(from_json[:threshold]) == secret


def test_a_corrupted_share_file_is_detected_by_its_checksum() -> None:
    share = split_secret(b"weights", threshold=2, share_count=3)[1]
    encoded = bytearray(share.to_bytes())
    encoded[100] ^= 0x01
    with pytest.raises(ShareCorruptedError, match=r"share 2 .* checksum mismatch"):
        SecretShare.from_bytes(bytes(encoded))
    with pytest.raises(ShareCorruptedError, match="truncated"):
        SecretShare.from_bytes(share.to_bytes()[:-40])


def test_a_share_changed_in_memory_is_caught_before_any_arithmetic() -> None:
    shares = split_secret(b"weights", threshold=2, share_count=3)
    altered = dataclasses.replace(shares[0], values=(shares[0].values[0], shares[0].values[1] + 1))
    with pytest.raises(ShareCorruptedError, match="share 1"):
        combine_shares([altered, shares[1]])


def test_a_tampered_share_with_a_fresh_checksum_fails_verification_and_spare_shares_name_it() -> None:
    shares = split_secret(b"model checkpoint bytes", threshold=2, share_count=4)
    forged = dataclasses.replace(shares[2], values=(shares[2].values[0], shares[2].values[1] ^ 1)).with_checksum()
    with pytest.raises(ShareVerificationError, match="does not match its commitment"):
        combine_shares([shares[0], forged])
    with pytest.raises(ShareVerificationError, match=r"shares \[3\] do not fit"):
        combine_shares([forged, shares[0], shares[3]])


def test_shares_of_different_splits_are_refused_with_a_clear_error() -> None:
    first = split_secret(b"same length!", threshold=2, share_count=3)
    second = split_secret(b"same length!", threshold=2, share_count=3)
    with pytest.raises(ShareMismatchError, match="differ in split_id"):
        combine_shares([first[0], second[1]])
    relabelled = dataclasses.replace(second[1], split_id=first[0].split_id).with_checksum()
    with pytest.raises(ShareMismatchError, match="differ in commitment"):
        combine_shares([first[0], relabelled])


def test_too_few_or_repeated_shares_are_refused() -> None:
    shares = split_secret(b"x", threshold=3, share_count=5)
    with pytest.raises(NotEnoughSharesError, match="2 shares given, 3 needed"):
        combine_shares(shares[:2])
    with pytest.raises(ShareMismatchError, match="repeated share index"):
        combine_shares([shares[0], shares[0], shares[1]])
    with pytest.raises(NotEnoughSharesError):
        combine_shares([])


def test_shares_must_be_rebuilt_with_the_helper_of_their_kind() -> None:
    with pytest.raises(ShareMismatchError, match="use combine_shares"):
        combine_floats(split_secret(b"x", threshold=1, share_count=1))


def test_non_finite_or_huge_floats_are_refused() -> None:
    with pytest.raises(ValueError, match="not finite"):
        split_floats([float("nan")], threshold=1, share_count=2)
    with pytest.raises(ValueError, match="exceeds"):
        split_floats([2.0**90], threshold=1, share_count=2)


def test_bad_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        split_secret(b"x", threshold=4, share_count=3)
