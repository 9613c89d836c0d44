"""Several signed integers in one Paillier plaintext, so one encryption, addition or decryption
serves them all.

Slot i holds v_i at bit i * slot_bits of the signed integer P = sum(v_i * 2^(i * slot_bits)), and
the plaintext is P mod n, which is also phe's encoding of the integer P (exponent 0). Slot values
are two's-complement-like: unpacking takes the low slot_bits bits as a signed number and borrows
from the slots above, so sums need no offset bookkeeping.

The bound. A slot has `slot_bits` bits, of which guard_bits = ceil(log2(max_terms)) are headroom:
each packed value must satisfy |v| <= 2^(slot_bits - guard_bits - 1) - 1, and then the sum of up
to `max_terms` packed plaintexts (homomorphic additions, or a scalar multiple with |k| * terms <=
max_terms) keeps every slot below 2^(slot_bits - 1) in magnitude and unpacks exactly. More terms
than that can carry into the next slot undetected, which is why the packer refuses values that do
not fit rather than truncating them.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

from services.core.errors import CipherstreamError
from services.crypto.paillier_keys import (
    BASE,
    PaillierPublicKey,
    PlaintextOverflowError,
    fixed_mantissa,
    signed_int,
)


class PackingError(CipherstreamError, ValueError):
    """A packing that cannot work: more values than slots, or slots too narrow for their guard."""


@dataclass(frozen=True)
class Packer:
    """Packs up to `slots` signed integers of `value_bits` bits into one plaintext.

    >>> packer = Packer(PaillierPublicKey((1 << 2047) + 1), slot_bits=20, max_terms=4)
    >>> packer.value_bits, packer.max_value, packer.slots
    (18, 131071, 102)
    >>> packer.unpack((packer.pack([3, -5]) + packer.pack([1, 2])) % packer.public_key.n, count=2)
    [4, -3]
    """

    public_key: PaillierPublicKey
    slot_bits: int
    max_terms: int = 1

    def __post_init__(self) -> None:
        if self.max_terms < 1:
            raise PackingError(f"max_terms is at least 1, not {self.max_terms}")
        if self.value_bits < 2:
            raise PackingError(f"{self.slot_bits}-bit slots leave no room for values beside "
                               f"{self.guard_bits} guard bits for {self.max_terms} terms")
        if self.slots < 1:
            raise PackingError(f"a {self.slot_bits}-bit slot does not fit a {self.public_key.bits}-bit key")

    @classmethod
    def for_values(cls, public_key: PaillierPublicKey, value_bits: int, max_terms: int = 1) -> Packer:
        """The packer whose slots hold signed `value_bits`-bit values summed `max_terms` times."""
        return cls(public_key, value_bits + max(0, math.ceil(math.log2(max_terms))), max_terms)

    @property
    def guard_bits(self) -> int:
        return math.ceil(math.log2(self.max_terms))

    @property
    def value_bits(self) -> int:
        return self.slot_bits - self.guard_bits

    @property
    def max_value(self) -> int:
        """Largest magnitude one packed value may have (symmetric, so negation stays in range)."""
        return (1 << (self.value_bits - 1)) - 1

    @property
    def slots(self) -> int:
        # |P| < 2^(slots * slot_bits - 1) must stay within phe's signed range (max_int ~ n / 3).
        return self.public_key.max_int.bit_length() // self.slot_bits

    def pack(self, values: Sequence[int]) -> int:
        """The plaintext (in [0, n)) holding `values`, slot 0 first."""
        if len(values) > self.slots:
            raise PackingError(f"{len(values)} values do not fit in {self.slots} slots of {self.slot_bits} bits")
        packed = 0
        for index, value in enumerate(values):
            try:
                integer = operator.index(value)  # ints and numpy ints; floats must go through pack_fixed
            except TypeError as error:
                raise PackingError(f"slot {index}: {value!r} is not an integer (use pack_fixed)") from error
            if not -self.max_value <= integer <= self.max_value:
                raise PlaintextOverflowError(f"slot {index}: {integer} is outside +/-{self.max_value}"
                                             f" ({self.value_bits} signed bits for {self.max_terms} terms)")
            packed += integer << (index * self.slot_bits)
        return packed % self.public_key.n

    def unpack(self, plaintext: int, count: int | None = None) -> list[int]:
        """The slot values of a plaintext (a decryption of packed, possibly summed, ciphertexts).

        With `count` None every slot is read and anything left above them is an overflow error.
        """
        remaining = signed_int(plaintext, self.public_key)
        slot_bits, mask, half = self.slot_bits, (1 << self.slot_bits) - 1, 1 << (self.slot_bits - 1)
        values = []
        for _ in range(self.slots if count is None else count):
            low = remaining & mask
            if low >= half:
                low -= 1 << slot_bits
            values.append(low)
            remaining = (remaining - low) >> slot_bits
        if count is None and remaining:
            raise PlaintextOverflowError("packed plaintext overflowed its slots")
        return values

    def pack_fixed(self, values: Sequence[float], exponent: int) -> int:
        """Fixed-point values (phe's base 16: mantissa = round(v * 16**-exponent)) in one plaintext.

        >>> packer = Packer(PaillierPublicKey((1 << 2047) + 1), slot_bits=40)
        >>> packer.unpack_fixed(packer.pack_fixed([1.25, -0.5], -4), -4, count=2)
        [1.25, -0.5]
        """
        return self.pack([fixed_mantissa(value, exponent) for value in values])

    def unpack_fixed(self, plaintext: int, exponent: int, count: int | None = None) -> list[float]:
        scale = pow(BASE, exponent)
        return [float(value * scale) for value in self.unpack(plaintext, count)]
