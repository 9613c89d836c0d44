"""g and h of a row in one Paillier plaintext, and histogram sums many to a plaintext.

Per tree the bank fixes two scales so that every |g_i| and h_i is an integer of `value_bits`
signed bits: g_q = round(g * scale_g), h_q = round(h * scale_h), with scale = (2^(bits-1) - 1) /
max |value|. A row's plaintext is g_q + h_q * 2^s (the crypto `Packer`'s slots 0 and 1), where
the slot width s = value_bits + ceil(log2 rows) leaves room for a sum over every row: any
histogram sum is a sum over a subset of the rows, so no slot ever carries into the next.

Slots are signed (the Packer borrows from the slot above when it unpacks), so g needs no offset
to be non-negative. FATE offsets g by its bound instead; then every sum needs a row count to
remove the offset again, a third slot per ciphertext and a count per candidate that the bank
would learn. Signed slots cost neither.

A candidate's sums (G_L, H_L) take two slots; the partner packs `candidates_per_value` of them
into one plaintext (shifting by 2s bits, Horner), so the bank decrypts once per that many
candidates: at 2048 bits, 24 bits and 100,000 rows, s = 42 and 24 candidates share a plaintext.

>>> from services.crypto.paillier import PaillierPublicKey
>>> packer = GradientPacker.for_tree(PaillierPublicKey((1 << 2047) + 1), np.array([0.5, -1.0]), np.array([0.25, 0.1]))
>>> packer.slot_bits, packer.candidates_per_value
(25, 40)
>>> g_q, h_q = packer.quantise(np.array([0.5, -1.0]), np.array([0.25, 0.1]))
>>> g_q.tolist(), h_q.tolist()
([4194304, -8388607], [8388607, 3355443])
>>> packer.unpack_candidates(packer.row_plaintexts(g_q, h_q)[1], 1)
[(-8388607, 3355443)]
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.core.errors import ConfigError
from services.crypto.paillier import Packer, PaillierPublicKey

DEFAULT_VALUE_BITS = 24  # float32 has 24 bits of mantissa: xgboost's gradients have no more


def slot_layout(public_key: PaillierPublicKey, slot_bits: int, rows: int) -> Packer:
    """The Packer both sides use for a tree: `slot_bits` wide, summed over up to `rows` rows."""
    return Packer(public_key, slot_bits, max_terms=max(rows, 1))


def row_slots(plaintexts: Sequence[int], packer: Packer) -> tuple[np.ndarray, np.ndarray]:
    """(g_q, h_q) of packed row plaintexts (what `Packer.unpack(value, count=2)` reads), vectorised.

    >>> from services.crypto.paillier import PaillierPublicKey
    >>> packer = Packer(PaillierPublicKey((1 << 2047) + 1), slot_bits=20)
    >>> [a.tolist() for a in row_slots([packer.pack([-3, 5]), packer.pack([7, 0])], packer)]
    [[-3, 7], [5, 0]]
    """
    n, bits = packer.public_key.n, packer.slot_bits
    signed = [value - n if value > n // 2 else value for value in plaintexts]
    mask, half = (1 << bits) - 1, 1 << (bits - 1)
    low = [value & mask for value in signed]
    g = [v - (1 << bits) if v >= half else v for v in low]
    return np.array(g, dtype=np.int64), np.array([(value - v) >> bits for value, v in zip(signed, g)], dtype=np.int64)


def candidates_per_value(packer: Packer) -> int:
    """How many (G_L, H_L) pairs one plaintext holds."""
    return packer.slots // 2


@dataclass(frozen=True)
class GradientPacker:
    """The bank's fixed point for one tree and the Packer of its slots."""

    packer: Packer
    scale_g: float
    scale_h: float

    @classmethod
    def for_tree(cls, public_key: PaillierPublicKey, gradients: np.ndarray, hessians: np.ndarray,
                 value_bits: int = DEFAULT_VALUE_BITS) -> GradientPacker:
        if not 8 <= value_bits <= 52:
            raise ConfigError(f"value_bits must be 8 to 52 (float64 holds 53), not {value_bits}")
        rows = max(int(gradients.size), 1)
        packer = Packer.for_values(public_key, value_bits, max_terms=rows)
        if candidates_per_value(packer) < 1:
            raise ConfigError(f"{value_bits}-bit values over {rows} rows do not fit twice in a {public_key.bits}-bit key")
        top = packer.max_value
        g_peak = float(np.abs(gradients).max()) if gradients.size else 0.0
        h_peak = float(hessians.max()) if hessians.size else 0.0
        return cls(packer, top / g_peak if g_peak > 0 else 1.0, top / h_peak if h_peak > 0 else 1.0)

    @property
    def slot_bits(self) -> int:
        return self.packer.slot_bits

    @property
    def candidates_per_value(self) -> int:
        return candidates_per_value(self.packer)

    def quantise(self, gradients: np.ndarray, hessians: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        top = self.packer.max_value
        g_q = np.clip(np.rint(gradients * self.scale_g), -top, top).astype(np.int64)
        h_q = np.clip(np.rint(hessians * self.scale_h), 0, top).astype(np.int64)
        return g_q, h_q

    def row_plaintexts(self, g_q: np.ndarray, h_q: np.ndarray) -> list[int]:
        """One plaintext in [0, n) per row: g_q in slot 0, h_q in slot 1 (`Packer.pack` of the pair;
        `quantise` already bounded both by the packer's max_value).

        >>> from services.crypto.paillier import PaillierPublicKey
        >>> packer = GradientPacker.for_tree(PaillierPublicKey((1 << 2047) + 1), np.array([1.0]), np.array([1.0]))
        >>> packer.row_plaintexts(np.array([-3]), np.array([5])) == [packer.packer.pack([-3, 5])]
        True
        """
        n, shift = self.packer.public_key.n, self.slot_bits
        return [(g + (h << shift)) % n for g, h in zip(g_q.tolist(), h_q.tolist())]

    def unpack_candidates(self, plaintext: int, count: int) -> list[tuple[int, int]]:
        """The (G_L, H_L) integer sums of the `count` candidates packed in one decrypted plaintext."""
        slots = self.packer.unpack(plaintext, count=2 * count)
        return list(zip(slots[0::2], slots[1::2]))

    def decode(self, g_sums: np.ndarray | Sequence[int], h_sums: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(g_sums, dtype=np.float64) / self.scale_g, np.asarray(h_sums, dtype=np.float64) / self.scale_h


def value_width(modulus: int) -> int:
    """Bytes of one value mod `modulus` on the wire."""
    return (modulus.bit_length() + 7) // 8
