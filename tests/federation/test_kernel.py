"""The bucket kernel gives exactly what phe's naive sum of scalar products gives: same ciphertexts, same values."""
from __future__ import annotations

import random
from collections.abc import Iterator

import gmpy2
import numpy as np
import pytest
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st
from phe import paillier

from services.models.kernel import (
    KernelError,
    KernelPlan,
    plan_kernel,
    signed_weighted_products,
    weighted_ciphertext_products,
)
from services.models.workers import WorkerPool


@pytest.fixture(scope="module")
def keypair() -> tuple[paillier.PaillierPublicKey, paillier.PaillierPrivateKey]:
    return paillier.generate_paillier_keypair(n_length=1024)


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    with WorkerPool(workers=2) as started:
        yield started


def naive_phe_sums(encrypted: list[paillier.EncryptedNumber], quantised: np.ndarray) -> list[paillier.EncryptedNumber]:
    """The reference: one phe scalar multiply per row and feature, summed."""
    sums = []
    for column in quantised.T.tolist():
        total = encrypted[0] * column[0]
        for number, value in zip(encrypted[1:], column[1:]):
            total = total + number * value
        sums.append(total)
    return sums


def encrypt_residuals(public_key: paillier.PaillierPublicKey, rows: int, seed: int) -> list[paillier.EncryptedNumber]:
    rng = random.Random(seed)
    return [public_key.encrypt(rng.uniform(-1, 1), precision=2**-32) for _ in range(rows)]


@pytest.mark.parametrize("bits", [1, 8, 12, 16])
def test_kernel_decrypts_to_exactly_what_phe_naive_sums_give(keypair, bits: int) -> None:
    public_key, private_key = keypair
    rng = np.random.default_rng(bits)
    rows, features = 60, 7
    limit = (1 << (bits - 1)) - 1
    quantised = rng.integers(-limit, limit + 1, size=(rows, features)) if bits > 1 else rng.integers(0, 1, (rows, features))
    quantised[:, 0] = 0  # an all-zero feature
    quantised[:, 1] = np.abs(quantised[:, 1])  # a non-negative one: no offset correction
    encrypted = encrypt_residuals(public_key, rows, seed=bits)
    exponent = encrypted[0].exponent
    assert all(number.exponent == exponent for number in encrypted)

    fast = signed_weighted_products([mpz(e.ciphertext(be_secure=False)) for e in encrypted], quantised,
                                    mpz(public_key.nsquare), bits)
    reference = naive_phe_sums(encrypted, quantised)

    for fast_ciphertext, slow in zip(fast, reference, strict=True):
        as_phe = paillier.EncryptedNumber(public_key, int(fast_ciphertext), exponent)
        assert private_key.decrypt(as_phe) == private_key.decrypt(slow)
        assert private_key.raw_decrypt(int(fast_ciphertext)) == private_key.raw_decrypt(slow.ciphertext(False))


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 40), features=st.integers(1, 9), bits=st.integers(1, 16),
       slice_width=st.integers(1, 4), window_bits=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_every_plan_computes_the_same_products(rows: int, features: int, bits: int, slice_width: int,
                                               window_bits: int, seed: int) -> None:
    nsquare = mpz(2**127 - 1) ** 2
    rng = np.random.default_rng(seed)
    bases = [mpz(int(b)) for b in rng.integers(2, 2**62, size=rows)]
    exponents = rng.integers(0, 1 << bits, size=(rows, features))
    got = weighted_ciphertext_products(bases, exponents, nsquare, bits, KernelPlan(slice_width, window_bits, 0))
    for column, product in enumerate(got):
        want = mpz(1)
        for base, value in zip(bases, exponents[:, column].tolist()):
            want = want * gmpy2.powmod(base, value, nsquare) % nsquare
        assert product == want


def test_two_worker_pool_matches_one_process(keypair, pool: WorkerPool) -> None:
    public_key, _ = keypair
    nsquare = mpz(public_key.nsquare)
    rng = np.random.default_rng(7)
    ciphertexts = [mpz(random.Random(i).getrandbits(2000)) for i in range(300)]
    quantised = rng.integers(-127, 128, size=(300, 21))
    assert signed_weighted_products(ciphertexts, quantised, nsquare, 8, pool=pool) == \
        signed_weighted_products(ciphertexts, quantised, nsquare, 8)


def test_joint_buckets_cost_less_than_one_multiplication_per_row_and_feature_on_large_batches() -> None:
    rng = np.random.default_rng(3)
    exponents = np.clip(np.round(rng.normal(128, 30, size=(40_000, 24))), 0, 255).astype(np.int64)
    plan = plan_kernel(exponents, bits=8)
    assert plan.slice_width > 1
    assert plan.estimated_modmuls < exponents.size


def test_out_of_range_exponents_are_a_clear_error() -> None:
    nsquare = mpz(101) ** 2
    with pytest.raises(KernelError, match="shift signed"):
        weighted_ciphertext_products([mpz(2)], np.array([[-1]]), nsquare, bits=8)
    with pytest.raises(KernelError, match=r"\[0, 2\^8\)"):
        weighted_ciphertext_products([mpz(2)], np.array([[256]]), nsquare, bits=8)
    with pytest.raises(KernelError, match="do not match"):
        weighted_ciphertext_products([mpz(2)], np.array([[1], [2]]), nsquare, bits=8)
    with pytest.raises(KernelError, match=r"\(-2\^7, 2\^7\)"):
        signed_weighted_products([mpz(2)], np.array([[128]]), nsquare, bits=8)
