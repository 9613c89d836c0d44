"""The encrypted gradient kernel: prod_i [[r_i]]^(u_ij) mod n^2 for every partner feature j.

Step 3 of federated LR costs B x F ciphertext-scalar products per batch (30 million per epoch at
100k rows x 300 features). One `phe` scalar multiply is a 2048-bit modular exponentiation,
about 3,000 modular multiplications; we get it down to about one multiplication per row and
feature, or less, with buckets (Pippenger):

- the partner's features are quantised to `bits`-bit non-negative integers u_ij (the partner
  keeps the scale and the offset, so the result decodes exactly to sum_i r_i * q_ij);
- per feature, each ciphertext is multiplied into the bucket of its value (zero costs nothing),
  and the buckets are combined with the running-sum trick: prod_v B_v^v costs 2 multiplications
  per bucket, not an exponentiation;
- a JOINT bucket over a slice of k features indexes each ciphertext by the k values together
  (k*w bits). The F features share the same ciphertexts, so one multiplication now serves k
  features; the per-feature bucket sums ("marginals") cost one multiplication per non-empty
  joint bucket. That wins whenever there are many more rows than joint buckets;
- values wider than the window are cut into `ceil(bits/w)` windows, combined by w squarings.

`plan_kernel` picks k and w from the exact number of non-empty buckets (numpy, no crypto), and
`services.models.workers.WorkerPool` spreads slices over processes (gmpy2 holds the GIL),
shipping the ciphertexts once per batch and worker.

>>> nsquare = gmpy2.mpz(1_000_003) ** 2
>>> ciphertexts = [gmpy2.mpz(c) for c in (17, 23, 99)]
>>> exponents = np.array([[1, 0], [2, 3], [0, 255]], dtype=np.int64)
>>> got = weighted_ciphertext_products(ciphertexts, exponents, nsquare, bits=8)
>>> want = [17 * 23**2 % nsquare, 23**3 * pow(99, 255, nsquare) % nsquare]
>>> [int(g) for g in got] == [int(w) for w in want]
True
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import gmpy2
import numpy as np
from gmpy2 import mpz

from services.core.errors import CipherstreamError

# Joint bucket tables above 2^16 entries cost more in memory (512 bytes each at 2048-bit keys)
# and in marginals than they save in multiplications for any batch we run.
MAX_INDEX_BITS = 16
MAX_BITS = 24
ONE = mpz(1)


class KernelError(CipherstreamError):
    """Inputs the kernel cannot work on (negative or too wide exponents, mismatched shapes)."""


@dataclass(frozen=True)
class KernelPlan:
    """slice_width k features share one joint bucket; window_bits w bits of each value per pass."""

    slice_width: int
    window_bits: int
    estimated_modmuls: int


class ProductsPool(Protocol):
    """Something that runs `weighted_ciphertext_products` for us, e.g. over several processes."""

    def products(self, ciphertexts: Sequence[mpz], exponents: np.ndarray, nsquare: mpz, bits: int) -> list[mpz]: ...


def _window_digits(exponents: np.ndarray, shift: int, window_bits: int) -> np.ndarray:
    return (exponents >> shift) & ((1 << window_bits) - 1)


def joint_index(digits: np.ndarray, window_bits: int) -> np.ndarray:
    """Row-wise joint bucket index of a (B, k) digit block: digit s sits at bits [s*w, (s+1)*w)."""
    index = np.zeros(digits.shape[0], dtype=np.int64)
    for position in range(digits.shape[1]):
        index |= digits[:, position].astype(np.int64) << (position * window_bits)
    return index


def _slice_cost(exponents: np.ndarray, bits: int, slice_width: int, window_bits: int) -> int:
    """Exact multiplications one slice of columns costs under (k, w), without touching ciphertexts."""
    cost = 0
    for shift in range(0, bits, window_bits):
        width = min(window_bits, bits - shift)
        index = joint_index(_window_digits(exponents, shift, width), width)
        index = index[index != 0]
        occupied = np.unique(index).size
        # bucketing: rows - buckets; marginals: about one per bucket and feature (k=1: none);
        # running sums: 2 per digit value and feature; window combination: w squarings + 1.
        marginals = occupied * slice_width if slice_width > 1 else 0
        cost += index.size - occupied + marginals + slice_width * (2 * (1 << width) + width + 1)
    return cost


def plan_kernel(exponents: np.ndarray, bits: int, sample_columns: int = 12) -> KernelPlan:
    """Choose slice width and window from the exact bucket occupancy of a sample of columns.

    >>> rng = np.random.default_rng(0)
    >>> plan_kernel(rng.integers(0, 256, size=(50_000, 24)), bits=8).slice_width > 1
    True
    >>> plan_kernel(rng.integers(0, 256, size=(64, 24)), bits=8).slice_width
    1
    """
    _rows, columns = exponents.shape
    sample = exponents[:, : min(columns, sample_columns)]
    best: KernelPlan | None = None
    for window_bits in range(1, bits + 1):
        for slice_width in range(1, MAX_INDEX_BITS // window_bits + 1):
            if slice_width > max(1, sample.shape[1]):
                break
            starts = range(0, sample.shape[1] - slice_width + 1, slice_width)
            costs = [_slice_cost(sample[:, s:s + slice_width], bits, slice_width, window_bits) for s in starts]
            per_column = sum(costs) / (len(costs) * slice_width)
            estimate = int(per_column * columns)
            if best is None or estimate < best.estimated_modmuls:
                best = KernelPlan(slice_width, window_bits, estimate)
    assert best is not None
    return best


def _running_sum(buckets: dict[int, mpz], nsquare: mpz) -> mpz:
    """prod_d buckets[d]^d with 2 multiplications per digit value (the running-sum trick)."""
    running = ONE
    total = ONE
    for digit in range(max(buckets), 0, -1):
        bucket = buckets.get(digit)
        if bucket is not None:
            running = bucket if running is ONE else running * bucket % nsquare
        if running is not ONE:
            total = running if total is ONE else total * running % nsquare
    return total


def joint_bucket_products(ciphertexts: Sequence[mpz], index: np.ndarray, nsquare: mpz) -> dict[int, mpz]:
    """prod_{i: index_i = v} c_i for every nonzero joint index v (rows of index 0 cost nothing).

    >>> nsquare = gmpy2.mpz(1_000_003) ** 2
    >>> buckets = joint_bucket_products([mpz(2), mpz(3), mpz(5)], np.array([1, 0, 1]), nsquare)
    >>> {v: int(c) for v, c in buckets.items()}
    {1: 10}
    """
    nonzero_rows = np.flatnonzero(index)
    joint: dict[int, mpz] = {}
    if nonzero_rows.size == 0:
        return joint
    # Rows sorted by bucket: each bucket is one run of plain multiplications (no dict per row).
    order = nonzero_rows[np.argsort(index[nonzero_rows], kind="stable")]
    sorted_index = index[order]
    run_starts = np.flatnonzero(np.diff(sorted_index, prepend=-1))
    run_ends = np.append(run_starts[1:], order.size)
    rows_in_order = order.tolist()
    for bucket_index, start, end in zip(sorted_index[run_starts].tolist(), run_starts.tolist(), run_ends.tolist()):
        bucket = ciphertexts[rows_in_order[start]]
        for row in rows_in_order[start + 1:end]:
            bucket = bucket * ciphertexts[row] % nsquare
        joint[bucket_index] = bucket
    return joint


def marginal_products(joint: dict[int, mpz], slice_width: int, window_bits: int, nsquare: mpz) -> list[dict[int, mpz]]:
    """Per feature of the slice, digit -> product of the joint buckets with that digit (digit 0 left out).

    >>> nsquare = gmpy2.mpz(1_000_003) ** 2
    >>> marginals = marginal_products({0b0101: mpz(7), 0b1001: mpz(11)}, slice_width=2, window_bits=2, nsquare=nsquare)
    >>> [{d: int(c) for d, c in m.items()} for m in marginals]
    [{1: 77}, {1: 7, 2: 11}]
    """
    mask = (1 << window_bits) - 1
    marginals: list[dict[int, mpz]] = []
    for position in range(slice_width):
        marginal: dict[int, mpz] = {}
        for bucket_index, bucket in joint.items():
            digit = (bucket_index >> (position * window_bits)) & mask
            if digit:
                previous = marginal.get(digit)
                marginal[digit] = bucket if previous is None else previous * bucket % nsquare
        marginals.append(marginal)
    return marginals


def _slice_products(ciphertexts: Sequence[mpz], exponents: np.ndarray, nsquare: mpz, bits: int,
                    window_bits: int) -> list[mpz]:
    """prod_i c_i^(e_ij) for each column of one slice, joint buckets window by window."""
    slice_width = exponents.shape[1]
    results = [ONE] * slice_width
    top_shift = ((bits - 1) // window_bits) * window_bits
    for shift in range(top_shift, -1, -window_bits):
        width = min(window_bits, bits - shift)
        # Horner over windows: what we have so far moves up by `width` bits.
        for position in range(slice_width):
            if results[position] is not ONE:
                results[position] = gmpy2.powmod(results[position], 1 << width, nsquare)
        joint = joint_bucket_products(ciphertexts, joint_index(_window_digits(exponents, shift, width), width), nsquare)
        if not joint:
            continue
        for position, marginal in enumerate(marginal_products(joint, slice_width, width, nsquare)):
            if marginal:
                window_product = _running_sum(marginal, nsquare)
                results[position] = window_product if results[position] is ONE else (
                    results[position] * window_product % nsquare)
    return results


def check_exponents(ciphertexts: Sequence[mpz], exponents: np.ndarray, bits: int) -> None:
    if exponents.ndim != 2 or exponents.shape[0] != len(ciphertexts):
        raise KernelError(f"exponents of shape {exponents.shape} do not match {len(ciphertexts)} ciphertexts")
    if not 1 <= bits <= MAX_BITS:
        raise KernelError(f"bits={bits}: the kernel handles 1 to {MAX_BITS}-bit exponents")
    if exponents.size and (exponents.min() < 0 or exponents.max() >= 1 << bits):
        raise KernelError(f"exponents must lie in [0, 2^{bits}); shift signed features first")


def weighted_ciphertext_products(ciphertexts: Sequence[mpz], exponents: np.ndarray, nsquare: mpz, bits: int,
                                 plan: KernelPlan | None = None) -> list[mpz]:
    """For each column j, prod_i ciphertexts[i]^exponents[i, j] mod nsquare, in this process."""
    exponents = np.asarray(exponents, dtype=np.int64)
    check_exponents(ciphertexts, exponents, bits)
    plan = plan or plan_kernel(exponents, bits)
    results: list[mpz] = []
    for start in range(0, exponents.shape[1], plan.slice_width):
        results.extend(_slice_products(ciphertexts, exponents[:, start:start + plan.slice_width], nsquare, bits,
                                       plan.window_bits))
    return results


def signed_weighted_products(ciphertexts: Sequence[mpz], quantised: np.ndarray, nsquare: mpz, bits: int,
                             pool: ProductsPool | None = None) -> list[mpz]:
    """prod_i c_i^(q_ij) for signed q in (-2^(bits-1), 2^(bits-1)): shift, then divide out the offset.

    Each column is shifted by its own minimum (so u_ij = q_ij - min_j >= 0 and zeros stay cheap
    for non-negative columns); the offset comes back as (prod_i c_i)^(-min_j), one inverse per batch.

    >>> nsquare = gmpy2.mpz(1_000_003) ** 2
    >>> c = [gmpy2.mpz(5), gmpy2.mpz(7)]
    >>> got = signed_weighted_products(c, np.array([[-2], [3]]), nsquare, bits=8)[0]
    >>> int(got) == int(gmpy2.invert(5**2, nsquare) * 7**3 % nsquare)
    True
    """
    quantised = np.asarray(quantised, dtype=np.int64)
    limit = 1 << (bits - 1)
    if quantised.size and (quantised.min() <= -limit or quantised.max() >= limit):
        raise KernelError(f"quantised values must lie in (-2^{bits - 1}, 2^{bits - 1})")
    offsets = np.minimum(quantised.min(axis=0), 0) if quantised.size else np.zeros(quantised.shape[1], np.int64)
    shifted = quantised - offsets
    products = (pool.products(ciphertexts, shifted, nsquare, bits) if pool is not None
                else weighted_ciphertext_products(ciphertexts, shifted, nsquare, bits))
    if not (offsets < 0).any():
        return products
    everything = ONE
    for ciphertext in ciphertexts:
        everything = everything * ciphertext % nsquare
    inverse = gmpy2.invert(everything, nsquare)
    return [product if offset == 0 else product * gmpy2.powmod(inverse, -int(offset), nsquare) % nsquare
            for product, offset in zip(products, offsets.tolist())]


def ciphertexts_to_bytes(ciphertexts: Sequence[mpz], width: int) -> bytes:
    """Fixed-width big-endian: the form ciphertexts travel in, to workers and over Kafka."""
    try:
        return b"".join(int(c).to_bytes(width, "big") for c in ciphertexts)
    except OverflowError as exc:
        raise KernelError(f"a ciphertext does not fit in {width} bytes") from exc


def ciphertexts_from_bytes(blob: bytes, width: int) -> list[mpz]:
    if width <= 0 or len(blob) % width:
        raise KernelError(f"{len(blob)} bytes are not a whole number of {width}-byte ciphertexts")
    return [mpz(int.from_bytes(blob[start:start + width], "big")) for start in range(0, len(blob), width)]
