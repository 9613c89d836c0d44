"""Paillier keys, phe's fixed-point encoding and the raw homomorphic operations.

Everything here follows python-paillier (`phe`) to the bit, so the two libraries read each other's
ciphertexts: g = n + 1, plaintexts in [0, n), a fixed-point value v with exponent e is the integer
round(v * 16**-e) mod n, and integers above n - max_int (max_int = n // 3 - 1) stand for negatives.

Ciphertexts are plain ints mod n^2. gmpy2 does every big-integer operation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property

import gmpy2
import phe
from gmpy2 import mpz
from phe import paillier as phe_paillier

from services.core.errors import CipherstreamError, ConfigError

KEY_BITS_ALLOWED = (2048, 3072)
DEFAULT_KEY_BITS = 2048
BASE = 16  # phe's EncodedNumber.BASE: exponents count hexadecimal digits


class PlaintextOverflowError(CipherstreamError, OverflowError):
    """A value that does not fit the plaintext (or the packing slot) it is meant for.

    An OverflowError too, as phe's decoder raises, so callers written against phe still catch it.
    """


class CiphertextError(CipherstreamError, ValueError):
    """An integer that cannot be a ciphertext under this key (outside (0, n^2))."""


@dataclass(frozen=True)
class PaillierPublicKey:
    """n = p * q; g is always n + 1 (as in phe), so n alone is the key.

    >>> key = PaillierPublicKey(1_000_003 * 1_000_033)
    >>> key.bits, key.nsquare == key.n ** 2
    (40, True)
    """

    n: int

    def __post_init__(self) -> None:
        if self.n < 15 or self.n % 2 == 0:
            raise ConfigError(f"a Paillier modulus is an odd product of two primes, not {self.n}")

    @cached_property
    def nsquare(self) -> int:
        return self.n * self.n

    @property
    def bits(self) -> int:
        return self.n.bit_length()

    @cached_property
    def max_int(self) -> int:
        """Largest magnitude phe encodes; encodings above n - max_int are negative numbers."""
        return self.n // 3 - 1

    @cached_property
    def n_mpz(self) -> mpz:
        return mpz(self.n)

    @cached_property
    def nsquare_mpz(self) -> mpz:
        return mpz(self.nsquare)

    def to_phe(self) -> phe_paillier.PaillierPublicKey:
        return phe_paillier.PaillierPublicKey(self.n)

    @classmethod
    def from_phe(cls, key: phe_paillier.PaillierPublicKey) -> PaillierPublicKey:
        return cls(int(key.n))


@dataclass(frozen=True)
class PaillierPrivateKey:
    """The factors of n. Decryption is by CRT over p^2 and q^2, as phe does it, with gmpy2.

    >>> private = PaillierPrivateKey(PaillierPublicKey(1_000_003 * 1_000_033), 1_000_003, 1_000_033)
    >>> private.decrypt_raw(private.public_key.n + 1)  # (n + 1)^1 * 1^n: the encryption of 1 with r = 1
    1
    """

    public_key: PaillierPublicKey
    p: int = field(repr=False)
    q: int = field(repr=False)

    def __post_init__(self) -> None:
        if self.p == self.q or self.p * self.q != self.public_key.n:
            raise ConfigError("private key does not match its public key (p * q != n, or p == q)")

    @cached_property
    def _crt(self) -> tuple[mpz, mpz, mpz, mpz, mpz, mpz, mpz]:
        p, q = mpz(self.p), mpz(self.q)
        psquare, qsquare = p * p, q * q
        g = mpz(self.public_key.n) + 1
        # h_p = L_p(g^(p-1) mod p^2)^-1 mod p: with it, m mod p = L_p(c^(p-1) mod p^2) * h_p mod p.
        hp = gmpy2.invert((gmpy2.powmod(g, p - 1, psquare) - 1) // p, p)
        hq = gmpy2.invert((gmpy2.powmod(g, q - 1, qsquare) - 1) // q, q)
        return p, q, psquare, qsquare, hp, hq, gmpy2.invert(p, q)

    def decrypt_raw(self, ciphertext: int) -> int:
        """The plaintext in [0, n) (phe's `raw_decrypt`)."""
        if not 0 < ciphertext < self.public_key.nsquare:
            raise CiphertextError("a ciphertext lies in (0, n^2): wrong key, or not a ciphertext")
        p, q, psquare, qsquare, hp, hq, p_inverse = self._crt
        c = mpz(ciphertext)
        mp = (gmpy2.powmod(c, p - 1, psquare) - 1) // p * hp % p
        mq = (gmpy2.powmod(c, q - 1, qsquare) - 1) // q * hq % q
        return int(mp + ((mq - mp) * p_inverse % q) * p)

    def decrypt_fixed(self, ciphertext: int, exponent: int) -> float:
        """The fixed-point value, as phe's `decrypt` of `EncryptedNumber(key, ciphertext, exponent)`."""
        return decode_fixed(self.decrypt_raw(ciphertext), exponent, self.public_key)

    def to_phe(self) -> phe_paillier.PaillierPrivateKey:
        return phe_paillier.PaillierPrivateKey(self.public_key.to_phe(), self.p, self.q)

    @classmethod
    def from_phe(cls, key: phe_paillier.PaillierPrivateKey) -> PaillierPrivateKey:
        return cls(PaillierPublicKey.from_phe(key.public_key), int(key.p), int(key.q))


def generate_keypair(bits: int = DEFAULT_KEY_BITS) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """A new key pair of 2048 (default) or 3072 bits, from phe's generator (gmpy2 primes).

    >>> generate_keypair(1024)
    Traceback (most recent call last):
    ...
    services.core.errors.ConfigError: Paillier keys are 2048 or 3072 bits, not 1024
    """
    if bits not in KEY_BITS_ALLOWED:
        raise ConfigError(f"Paillier keys are {' or '.join(map(str, KEY_BITS_ALLOWED))} bits, not {bits}")
    _, private = phe_paillier.generate_paillier_keypair(n_length=bits)
    ours = PaillierPrivateKey.from_phe(private)
    return ours.public_key, ours


def fixed_mantissa(value: float, exponent: int) -> int:
    """round(value * 16**-exponent), exactly as phe's EncodedNumber.encode computes it.

    >>> fixed_mantissa(-1.5, -1), fixed_mantissa(2.5, 0), fixed_mantissa(40, 1)
    (-24, 2, 2)
    """
    if isinstance(value, int):
        if exponent <= 0:
            return value << (-4 * exponent)
        return round(Fraction(value, 1 << (4 * exponent)))
    if value != value or value in (float("inf"), float("-inf")):
        raise PlaintextOverflowError(f"{value} cannot be encoded")
    if exponent <= 0:
        # Scaling a float by a power of two is exact (short of float overflow), so this rounds
        # the same exact product that phe's Fraction arithmetic rounds (both half to even).
        try:
            return round(math.ldexp(value, -4 * exponent))
        except OverflowError:  # beyond float range: exact, as phe, then refused by the range check
            return round(Fraction(value) * (1 << (-4 * exponent)))
    return round(Fraction(value) / (1 << (4 * exponent)))


def encode_fixed(value: float, exponent: int, public_key: PaillierPublicKey) -> int:
    """value as phe encodes it at this exponent: round(value * 16**-exponent) mod n.

    >>> key = PaillierPublicKey(1_000_003 * 1_000_033)
    >>> encode_fixed(-1.5, -1, key) == key.n - 24, decode_fixed(encode_fixed(-1.5, -1, key), -1, key)
    (True, -1.5)
    """
    mantissa = fixed_mantissa(value, exponent)
    if abs(mantissa) > public_key.max_int:
        raise PlaintextOverflowError(f"{value} does not fit a {public_key.bits}-bit key at exponent {exponent}")
    return mantissa % public_key.n


def decode_fixed(encoding: int, exponent: int, public_key: PaillierPublicKey) -> float:
    """phe's EncodedNumber.decode: signed mantissa times 16**exponent."""
    return float(signed_int(encoding, public_key) * pow(BASE, exponent))


def signed_int(encoding: int, public_key: PaillierPublicKey) -> int:
    """phe's reading of a plaintext: above n - max_int it stands for a negative number.

    >>> key = PaillierPublicKey(1_000_003 * 1_000_033)
    >>> signed_int(5, key), signed_int(key.n - 5, key)
    (5, -5)
    """
    if encoding >= public_key.n - public_key.max_int:
        return encoding - public_key.n
    if encoding > public_key.max_int:
        raise PlaintextOverflowError("plaintext overflowed: it is neither a positive nor a negative encoding")
    return encoding


def add_raw(public_key: PaillierPublicKey, c1: int, c2: int) -> int:
    """[[a]], [[b]] -> [[a + b]]: one multiplication mod n^2."""
    return int(mpz(c1) * c2 % public_key.nsquare_mpz)


def add_plain_raw(public_key: PaillierPublicKey, ciphertext: int, plaintext: int) -> int:
    """[[a]], b -> [[a + b]] without an obfuscator: g^b = 1 + n*b mod n^2 (g = n + 1)."""
    return int((public_key.n_mpz * plaintext + 1) * mpz(ciphertext) % public_key.nsquare_mpz)


def scalar_mul_raw(public_key: PaillierPublicKey, ciphertext: int, scalar: int) -> int:
    """[[m]] -> [[scalar * m]] with an exponent as long as the scalar.

    phe raises to n - |k| for a negative k (a 2048-bit exponent); we invert the ciphertext mod n^2
    instead and raise to |k|, which costs one inversion plus as many squarings as k has bits.

    >>> private = PaillierPrivateKey(PaillierPublicKey(1_000_003 * 1_000_033), 1_000_003, 1_000_033)
    >>> key = private.public_key
    >>> signed_int(private.decrypt_raw(scalar_mul_raw(key, add_plain_raw(key, 1, 7), -3)), key)
    -21
    """
    nsquare = public_key.nsquare_mpz
    if scalar < 0:
        return int(gmpy2.powmod(gmpy2.invert(mpz(ciphertext), nsquare), -scalar, nsquare))
    return int(gmpy2.powmod(mpz(ciphertext), scalar, nsquare))


def to_phe_encrypted(public_key: PaillierPublicKey, ciphertext: int, exponent: int) -> phe.EncryptedNumber:
    """Our ciphertext as phe's EncryptedNumber (decrypts with phe's private key)."""
    return phe.EncryptedNumber(public_key.to_phe(), int(ciphertext), exponent)
