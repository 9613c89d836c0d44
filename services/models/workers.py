"""A party's Paillier work spread over its cores: the kernel, encryption and decryption.

gmpy2 holds the GIL, so threads do not help; each party runs `workers` processes (forkserver:
they never inherit the parent's threads, such as an obfuscator pool's or a Kafka client's).
Big integers travel as fixed-width big-endian bytes: one copy of the batch's ciphertexts per
worker and batch. Each worker makes its own DJN obfuscators (any h_s = (-x^2)^n serves, so
workers need not share one), which is how encryption of a whole batch uses every core.

>>> from services.crypto.paillier import PaillierPublicKey
>>> with WorkerPool(workers=1) as pool:
...     ciphertexts = pool.encrypt(PaillierPublicKey(1_000_003 * 1_000_033), [1, 2, 3])
>>> len(ciphertexts)
3
"""
from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

import gmpy2
import numpy as np
from gmpy2 import mpz

from services.crypto.paillier import DjnObfuscators, PaillierPrivateKey, PaillierPublicKey
from services.models.kernel import (
    KernelPlan,
    check_exponents,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    plan_kernel,
    weighted_ciphertext_products,
)

# One comb table per key and worker process: building it costs about 0.15 s at 2048 bits, so a
# worker keeps it for the life of the pool (the pool is per party and per training run).
_obfuscator_makers: dict[int, DjnObfuscators] = {}
R = TypeVar("R")


def _width(modulus: int) -> int:
    return (modulus.bit_length() + 7) // 8


def encrypt_with(maker: DjnObfuscators, encodings: Sequence[int]) -> list[mpz]:
    """[[m]] = (1 + n m) r mod n^2 with fresh DJN obfuscators r (what FastEncryptor does)."""
    n, nsquare = mpz(maker.public_key.n), mpz(maker.public_key.nsquare)
    return [(n * encoding + 1) * maker.make() % nsquare for encoding in encodings]


def _worker_encrypt(n: int, encodings: list[int]) -> bytes:
    maker = _obfuscator_makers.get(n)
    if maker is None:
        maker = _obfuscator_makers[n] = DjnObfuscators(PaillierPublicKey(n))
    return ciphertexts_to_bytes(encrypt_with(maker, encodings), _width(n * n))


def _worker_decrypt(n: int, p: int, q: int, blob: bytes) -> bytes:
    private_key = PaillierPrivateKey(PaillierPublicKey(n), p, q)
    ciphertexts = ciphertexts_from_bytes(blob, _width(n * n))
    return ciphertexts_to_bytes([mpz(private_key.decrypt_raw(c)) for c in ciphertexts], _width(n))


def _worker_products(blob: bytes, width: int, exponents: np.ndarray, nsquare_bytes: bytes, bits: int,
                     plan: KernelPlan) -> bytes:
    ciphertexts = ciphertexts_from_bytes(blob, width)
    nsquare = mpz(int.from_bytes(nsquare_bytes, "big"))
    return ciphertexts_to_bytes(weighted_ciphertext_products(ciphertexts, exponents, nsquare, bits, plan), width)


def _chunks(count: int, parts: int) -> list[range]:
    step = math.ceil(count / parts) if count else 1
    return [range(start, min(start + step, count)) for start in range(0, count, step)]


class WorkerPool:
    """`workers` processes for one party; `workers=1` works in this process (no start-up, no copies)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers if workers is not None else (multiprocessing.cpu_count() or 1))
        self._executor: ProcessPoolExecutor | None = None
        self._local_makers: dict[int, DjnObfuscators] = {}
        if self.workers > 1:
            self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("forkserver"))

    def products(self, ciphertexts: Sequence[mpz], exponents: np.ndarray, nsquare: mpz, bits: int) -> list[mpz]:
        """The kernel (`weighted_ciphertext_products`) with whole feature slices per worker."""
        exponents = np.asarray(exponents, dtype=np.int64)
        check_exponents(ciphertexts, exponents, bits)
        plan = plan_kernel(exponents, bits)
        slices = math.ceil(exponents.shape[1] / plan.slice_width)
        if self._executor is None or slices < 2:
            return weighted_ciphertext_products(ciphertexts, exponents, nsquare, bits, plan)
        width = _width(int(nsquare))
        blob = ciphertexts_to_bytes(ciphertexts, width)
        nsquare_bytes = int(nsquare).to_bytes(width, "big")
        per_worker = math.ceil(slices / self.workers) * plan.slice_width
        futures = [self._executor.submit(_worker_products, blob, width, exponents[:, start:start + per_worker],
                                         nsquare_bytes, bits, plan)
                   for start in range(0, exponents.shape[1], per_worker)]
        results: list[mpz] = []
        for future in futures:
            results.extend(ciphertexts_from_bytes(future.result(), width))
        return results

    def encrypt(self, public_key: PaillierPublicKey, encodings: Sequence[int]) -> list[mpz]:
        """Encrypt plaintexts in [0, n), obfuscators made on every worker as they are needed."""
        if self._executor is None or len(encodings) < 2 * self.workers:
            maker = self._local_makers.get(public_key.n)
            if maker is None:
                maker = self._local_makers[public_key.n] = DjnObfuscators(public_key)
            return encrypt_with(maker, encodings)
        futures = [self._executor.submit(_worker_encrypt, public_key.n, [int(encodings[i]) for i in chunk])
                   for chunk in _chunks(len(encodings), self.workers)]
        width = _width(public_key.nsquare)
        return [c for future in futures for c in ciphertexts_from_bytes(future.result(), width)]

    def decrypt(self, private_key: PaillierPrivateKey, ciphertexts: Sequence[int]) -> list[int]:
        """Raw decryptions (plaintexts in [0, n)), by CRT, split over the workers."""
        if self._executor is None or len(ciphertexts) < 2 * self.workers:
            return [private_key.decrypt_raw(int(c)) for c in ciphertexts]
        n = private_key.public_key.n
        width = _width(n * n)
        futures = [self._executor.submit(_worker_decrypt, n, private_key.p, private_key.q,
                                         ciphertexts_to_bytes([gmpy2.mpz(ciphertexts[i]) for i in chunk], width))
                   for chunk in _chunks(len(ciphertexts), self.workers)]
        return [int(m) for future in futures for m in ciphertexts_from_bytes(future.result(), _width(n))]

    def map(self, function: Callable[..., R], tasks: Sequence[tuple[Any, ...]]) -> list[R]:
        """function(*task) for every task, over the workers (in this process with one worker or one task).
        `function` must be a module-level function: the tasks are pickled to the worker processes."""
        if self._executor is None or len(tasks) < 2:
            return [function(*task) for task in tasks]
        futures = [self._executor.submit(function, *task) for task in tasks]
        return [future.result() for future in futures]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
