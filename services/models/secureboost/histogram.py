"""Histogram sums over encrypted (g, h): the partner's cost centre, and the candidates it sends.

A node's histogram for one partner column is, per bin, the sum of the packed (g, h) of the
node's rows in that bin: under Paillier a product of ciphertexts mod n^2, one multiplication per
row and column. What we do to need fewer:

- joint buckets (services/models/kernel.py): a slice of k columns indexes each row by its k
  digits together, so one multiplication serves k columns, then each joint bucket is multiplied
  into its k per-column bins; `plan_slice_width` picks k from the node's exact bucket occupancy;
- digit 0 (each column's most populated bin, see binning.py) is the node total divided by the
  column's other bins: rows in it cost nothing, and the node total is shared by every column;
- histogram subtraction: of two siblings only the one with fewer rows is summed; the other is
  its parent's histogram minus it, bin by bin (one inversion per bin);
- whole feature slices go to the party's process pool (gmpy2 holds the GIL).

The candidates: per column, a split after each occupied bin but the last ("bin <= t" goes
left), and where the node has missing values each such split twice, missing rows left or right,
plus missing against the rest. The sums (G_L, H_L) are cumulative over the bins, shuffled by
the partner so their order tells the bank neither column nor threshold, and packed
`candidates_per_value` to a plaintext by shifting (Horner: c^(2^(2s)) * c' per candidate).

The same steps run on plaintexts mod n with additions (`PlainArithmetic`) in the plaintext
protocol check, which must decrypt to the same integers: tests/federation compares the trees.

>>> arithmetic = PlainArithmetic(10007 * 10009)
>>> counts = np.array([3, 0, 2, 1])  # bins 0..2 and the missing bin
>>> candidate_splits(counts)
[(0, False), (0, True), (2, False)]
>>> cumulative_sums([5, 0, 7, 100], counts, arithmetic)
[5, 105, 12]
>>> compress([1, 2, 3], per_value=2, shift_bits=8, arithmetic=arithmetic)
[513, 3]
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import gmpy2
import numpy as np
from gmpy2 import mpz

from services.models.kernel import (
    MAX_INDEX_BITS,
    ONE,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    joint_bucket_products,
    joint_index,
    marginal_products,
)

V = TypeVar("V")


class Arithmetic(Protocol[V]):
    """Addition of the values a histogram holds: ciphertexts (mod n^2) or plaintexts (mod n)."""

    @property
    def zero(self) -> V: ...

    def add(self, a: V, b: V) -> V: ...

    def subtract(self, a: V, b: V) -> V: ...

    def shift(self, a: V, bits: int) -> V: ...


@dataclass(frozen=True)
class CipherArithmetic:
    """[[a]] [[b]] = [[a + b]], [[a]] / [[b]] = [[a - b]], [[a]]^(2^k) = [[a * 2^k]], all mod n^2."""

    nsquare: mpz

    @property
    def zero(self) -> mpz:
        return ONE

    def add(self, a: mpz, b: mpz) -> mpz:
        return a * b % self.nsquare

    def subtract(self, a: mpz, b: mpz) -> mpz:
        return a * gmpy2.invert(b, self.nsquare) % self.nsquare

    def shift(self, a: mpz, bits: int) -> mpz:
        return gmpy2.powmod(a, 1 << bits, self.nsquare)


@dataclass(frozen=True)
class PlainArithmetic:
    """The plaintext protocol check: the same sums on encodings mod n."""

    n: int

    @property
    def zero(self) -> int:
        return 0

    def add(self, a: int, b: int) -> int:
        return (a + b) % self.n

    def subtract(self, a: int, b: int) -> int:
        return (a - b) % self.n

    def shift(self, a: int, bits: int) -> int:
        return (a << bits) % self.n


def candidate_splits(counts: np.ndarray) -> list[tuple[int, bool]]:
    """(last bin on the left, missing rows go left) per candidate of one column, from the node's
    row count per bin (the missing bin last). Splits that leave a side empty are left out."""
    occupied = np.flatnonzero(counts[:-1]).tolist()
    has_missing = bool(counts[-1])
    candidates: list[tuple[int, bool]] = []
    for threshold in occupied[:-1]:
        candidates.append((threshold, False))
        if has_missing:
            candidates.append((threshold, True))
    if has_missing and occupied:
        candidates.append((occupied[-1], False))  # every value left, the missing rows right
    return candidates


def cumulative_sums(bin_values: Sequence[V], counts: np.ndarray, arithmetic: Arithmetic[V]) -> list[V]:
    """(G_L, H_L) of each of `candidate_splits(counts)`, in that order, from the column's per-bin sums."""
    missing = bin_values[-1]
    running: V | None = None
    sums: list[V] = []
    candidates = candidate_splits(counts)
    at = 0
    for bin_index in range(len(bin_values) - 1):
        if counts[bin_index]:
            value = bin_values[bin_index]
            running = value if running is None else arithmetic.add(running, value)
        while at < len(candidates) and candidates[at][0] == bin_index:
            assert running is not None  # a candidate's bin is occupied
            sums.append(arithmetic.add(running, missing) if candidates[at][1] else running)
            at += 1
    return sums


def compress(values: Sequence[V], per_value: int, shift_bits: int, arithmetic: Arithmetic[V]) -> list[V]:
    """Values packed `per_value` to one: v_0 + v_1 2^shift + v_2 2^(2 shift) ... (Horner from the top)."""
    packed: list[V] = []
    for start in range(0, len(values), per_value):
        group = values[start:start + per_value]
        accumulated = group[-1]
        for value in reversed(group[:-1]):
            accumulated = arithmetic.add(arithmetic.shift(accumulated, shift_bits), value)
        packed.append(accumulated)
    return packed


def plan_slice_width(digits: np.ndarray, window_bits: int, sample_columns: int = 12) -> int:
    """Columns per joint bucket for these rows: the k with the fewest multiplications, counted exactly
    on a sample of columns (bucketing: nonzero rows - buckets; into the bins: about k per bucket).

    >>> rng = np.random.default_rng(0)
    >>> plan_slice_width(rng.integers(0, 32, size=(50_000, 12)), 5)  # 1,024 joint buckets for 50,000 rows
    2
    """
    columns = digits.shape[1]
    sample = digits[:, :min(columns, sample_columns)]
    best, best_cost = 1, float("inf")
    for width in range(1, max(1, MAX_INDEX_BITS // window_bits) + 1):
        if width > max(1, sample.shape[1]):
            break
        cost = 0.0
        slices = range(0, sample.shape[1] - width + 1, width)
        for start in slices:
            index = joint_index(sample[:, start:start + width], window_bits)
            index = index[index != 0]
            occupied = np.unique(index)
            cost += index.size - occupied.size
            for position in range(width):  # into the bins: a digit's first bucket is free
                digit = (occupied >> (position * window_bits)) & ((1 << window_bits) - 1)
                digit = digit[digit != 0]
                cost += digit.size - np.unique(digit).size
        per_column = cost / (len(slices) * width)
        if per_column < best_cost:
            best, best_cost = width, per_column
    return best


def bin_products(ciphertexts: Sequence[mpz], digits: np.ndarray, bins: Sequence[int], nsquare: mpz) -> list[list[mpz]]:
    """Per column, per digit (0 to bins - 1), the product of the ciphertexts of the rows with that digit.

    >>> nsquare = gmpy2.mpz(1_000_003) ** 2
    >>> cts = [mpz(2), mpz(3), mpz(5), mpz(7)]
    >>> [[int(c) for c in column] for column in bin_products(cts, np.array([[0, 1], [0, 0], [1, 1], [2, 0]]), [3, 2], nsquare)]
    [[6, 5, 7], [21, 10]]
    """
    digits = np.asarray(digits, dtype=np.int64)
    columns = digits.shape[1]
    total = ONE
    for ciphertext in ciphertexts:
        total = total * ciphertext % nsquare
    # The digits this node holds set the window (an empty missing bin would cost a bit and quadruple
    # the joint buckets of a pair of columns).
    window_bits = max(1, int(digits.max()).bit_length()) if digits.size else 1
    slice_width = plan_slice_width(digits, window_bits) if len(ciphertexts) else 1
    out: list[list[mpz]] = []
    for start in range(0, columns, slice_width):
        block = digits[:, start:start + slice_width]
        joint = joint_bucket_products(ciphertexts, joint_index(block, window_bits), nsquare)
        for position, marginal in enumerate(marginal_products(joint, block.shape[1], window_bits, nsquare)):
            column_bins = [ONE] * bins[start + position]
            others = ONE
            for digit, product in marginal.items():
                column_bins[digit] = product
                others = others * product % nsquare
            column_bins[0] = total if others is ONE else total * gmpy2.invert(others, nsquare) % nsquare
            out.append(column_bins)
    return out


@dataclass
class NodeHistogram(Generic[V]):
    """One node's per-bin sums, per column in bin order (the missing bin last)."""

    bins: list[list[V]]

    def minus(self, other: NodeHistogram[V], arithmetic: Arithmetic[V]) -> NodeHistogram[V]:
        return NodeHistogram([[arithmetic.subtract(a, b) for a, b in zip(mine, theirs)]
                              for mine, theirs in zip(self.bins, other.bins)])


# --- tasks for a party's process pool: bytes in, bytes out (fixed-width big-endian values) ----------------

def bin_products_task(blob: bytes, width: int, nsquare_bytes: bytes, node_sizes: Sequence[int], digits: np.ndarray,
                      bins: Sequence[int]) -> bytes:
    """`bin_products` for consecutive nodes' rows (their ciphertexts one after the other in `blob`)
    on a slice of columns: per node, per column, per digit, one ciphertext."""
    ciphertexts = ciphertexts_from_bytes(blob, width)
    nsquare = mpz(int.from_bytes(nsquare_bytes, "big"))
    out: list[mpz] = []
    start = 0
    for size in node_sizes:
        for column_bins in bin_products(ciphertexts[start:start + size], digits[start:start + size], bins, nsquare):
            out.extend(column_bins)
        start += size
    return ciphertexts_to_bytes(out, width)


def compress_task(blob: bytes, width: int, nsquare_bytes: bytes, group_sizes: Sequence[int], shift_bits: int) -> bytes:
    """`compress` of consecutive groups of ciphertexts, one packed ciphertext per group."""
    ciphertexts = ciphertexts_from_bytes(blob, width)
    arithmetic = CipherArithmetic(mpz(int.from_bytes(nsquare_bytes, "big")))
    out: list[mpz] = []
    start = 0
    for size in group_sizes:
        out.extend(compress(ciphertexts[start:start + size], size, shift_bits, arithmetic))
        start += size
    return ciphertexts_to_bytes(out, width)
