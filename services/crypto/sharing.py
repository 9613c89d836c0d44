"""Shamir secret sharing (k of n) for model checkpoints, intermediate results and weight vectors.

A dealer splits a secret into n shares for n custodians; any k rebuild it, fewer than k say
nothing about it. Who holds what, and what each learns:

| who | holds | learns |
| --- | --- | --- |
| dealer | the secret | everything (it made the shares, then drops the secret) |
| each custodian | one `SecretShare` (a file: `to_bytes` or `to_json`) | the secret's length, k, n and the split id; nothing about the content (see below) |
| anyone with k shares | k shares | the secret, checked against its commitment |
| anyone with k-1 shares | k-1 shares | nothing about the content: for any other secret of the same length there are exactly as many ways to draw the random coefficients that give the same k-1 shares |

Scheme: the secret becomes field elements over GF(p), p a Mersenne prime (2^521 - 1 for bytes:
65 bytes per element; 2^127 - 1 for fixed-point floats: one value per element, 16 bytes).
Element e_j is the constant term of a random polynomial f_j of degree k-1; custodian i gets
f_j(i) for every j. Rebuilding is Lagrange interpolation at 0.

Integrity, two checks with distinct errors:
- a checksum (SHA-256 of the share's own fields) catches a share file corrupted at rest or in
  transit, at parse time and again at rebuild (`ShareCorruptedError`, naming the share);
- a commitment (SHA-256 of the split id, a 256-bit random nonce and the secret) catches a share
  that is self-consistent but wrong: tampered with and re-checksummed, or from another split
  with the same parameters (`ShareVerificationError`; with more than k shares we find and name
  the inconsistent ones). The nonce is shared along with the secret, so with fewer than k
  shares nobody can test a guessed secret against the commitment.
Shares that disagree on their parameters (split id, k, n, field, length) fail before any
arithmetic with `ShareMismatchError`.

Why not a library: we checked PyPI. pycryptodome's `Crypto.Protocol.SecretSharing.Shamir`
(well kept) shares only 16-byte secrets over GF(2^128) and carries no threshold, split id or
integrity check; `shamir-mnemonic` implements SLIP-39 for wallet seeds; the other Shamir
packages there are single-author projects without recent maintenance. The scheme itself is a
few lines of modular arithmetic, checked here by property tests (any k of n rebuild; k-1 shares
are consistent with every secret).

>>> shares = split_secret(b"model checkpoint", threshold=2, share_count=3)
>>> combine_shares([shares[2], shares[0]])
b'model checkpoint'
>>> combine_shares(split_floats([0.5, -1.25], threshold=2, share_count=2))
Traceback (most recent call last):
...
services.crypto.sharing.ShareMismatchError: these shares hold fixed_point values: use combine_floats
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import secrets
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from services.core.errors import CipherstreamError

Encoding = Literal["bytes", "fixed_point"]

MERSENNE_EXPONENTS = (127, 521)
"""Fields we use: p = 2^bits - 1, both prime. 521 holds 65 bytes of a byte string per element;
127 holds one fixed-point value with room to spare, at an eighth of the size."""

BYTES_PRIME_BITS = 521
BYTES_PER_ELEMENT = (BYTES_PRIME_BITS - 1) // 8
"""65: the most whole bytes whose integer is always below 2^521 - 1."""
FLOATS_PRIME_BITS = 127
DEFAULT_FRAC_BITS = 40
"""Fixed-point fraction bits for floats: a resolution of 9e-13, finer than float32 weights need,
leaving 86 bits of integer range below p/2 in the 127-bit field."""

NONCE_BITS = 256
SPLIT_ID_BYTES = 16
MAX_SUBSETS_TRIED = 10_000
"""When shares fail verification, how many k-subsets we try to find the bad ones."""

RandBelow = Callable[[int], int]


class ShareError(CipherstreamError):
    """Base of every secret-sharing error."""


class NotEnoughSharesError(ShareError):
    """Fewer distinct shares than the threshold."""


class ShareMismatchError(ShareError):
    """Shares that cannot belong to one split (parameters differ, repeated index, wrong kind)."""


class ShareCorruptedError(ShareError):
    """A share's checksum does not match its contents, or its bytes do not parse."""


class ShareVerificationError(ShareError):
    """The rebuilt secret does not match the commitment: some share is wrong."""


@dataclass(frozen=True)
class SecretShare:
    """One custodian's share. `values` are f_j(index) for every element j (nonce first).

    >>> share = split_secret(b"abc", threshold=2, share_count=3)[1]
    >>> share.index, share.threshold, share.share_count, len(share.to_bytes())
    (2, 2, 3, 247)
    >>> SecretShare.from_bytes(share.to_bytes()) == share == SecretShare.from_json(share.to_json())
    True
    """

    split_id: bytes
    index: int
    threshold: int
    share_count: int
    prime_bits: int
    encoding: Encoding
    secret_length: int
    """Bytes of the secret for "bytes", number of floats for "fixed_point"."""
    frac_bits: int
    commitment: bytes
    values: tuple[int, ...] = field(repr=False)
    checksum: bytes = b""
    """SHA-256 of the other fields; filled in by `split_*` and checked when read and combined."""

    _MAGIC: ClassVar[bytes] = b"CSSHARE1"
    _HEADER: ClassVar[struct.Struct] = struct.Struct(f">{SPLIT_ID_BYTES}sHHHHBQH32sQ")

    @property
    def prime(self) -> int:
        return (1 << self.prime_bits) - 1

    @property
    def value_bytes(self) -> int:
        return (self.prime_bits + 7) // 8

    def _body(self) -> bytes:
        """Canonical bytes of every field but the checksum."""
        encoding_code = 0 if self.encoding == "bytes" else 1
        header = self._HEADER.pack(
            self.split_id,
            self.index,
            self.threshold,
            self.share_count,
            self.prime_bits,
            encoding_code,
            self.secret_length,
            self.frac_bits,
            self.commitment,
            len(self.values),
        )
        width = self.value_bytes
        return header + b"".join(value.to_bytes(width, "big") for value in self.values)

    def computed_checksum(self) -> bytes:
        return hashlib.sha256(self._MAGIC + self._body()).digest()

    def with_checksum(self) -> SecretShare:
        return _replace_checksum(self, self.computed_checksum())

    def check(self) -> None:
        """Raise `ShareCorruptedError` unless the checksum matches the contents."""
        if self.checksum != self.computed_checksum():
            raise ShareCorruptedError(f"share {self.index} of split {self.split_id.hex()} is corrupted: checksum mismatch")

    def to_bytes(self) -> bytes:
        return self._MAGIC + self._body() + self.checksum

    @classmethod
    def from_bytes(cls, encoded: bytes) -> SecretShare:
        """Parse a share file; a truncated or altered file raises `ShareCorruptedError`."""
        if not encoded.startswith(cls._MAGIC) or len(encoded) < len(cls._MAGIC) + cls._HEADER.size + 32:
            raise ShareCorruptedError("not a Cipherstream secret share (bad magic or truncated)")
        body = encoded[len(cls._MAGIC) : -32]
        header = cls._HEADER.unpack_from(body)
        split_id, index, threshold, share_count, prime_bits, encoding_code, secret_length, frac_bits, commitment, count = header
        if prime_bits not in MERSENNE_EXPONENTS or encoding_code not in (0, 1):
            raise ShareCorruptedError(f"share {index}: unknown field {prime_bits} or encoding {encoding_code}")
        width = (prime_bits + 7) // 8
        packed_values = body[cls._HEADER.size :]
        if len(packed_values) != count * width:
            raise ShareCorruptedError(f"share {index}: expected {count} values, the file is truncated or padded")
        values = tuple(
            int.from_bytes(packed_values[start : start + width], "big") for start in range(0, len(packed_values), width)
        )
        encoding: Encoding = "bytes" if encoding_code == 0 else "fixed_point"
        share = cls(
            split_id, index, threshold, share_count, prime_bits, encoding, secret_length, frac_bits, commitment, values,
            encoded[-32:],
        )
        share.check()
        return share

    def to_json(self) -> str:
        """A JSON document for custodians who keep text files; the payload is base64."""
        return json.dumps(
            {
                "cipherstream_share": 1,
                "split_id": self.split_id.hex(),
                "index": self.index,
                "threshold": self.threshold,
                "share_count": self.share_count,
                "share": base64.b64encode(self.to_bytes()).decode(),
            }
        )

    @classmethod
    def from_json(cls, document: str) -> SecretShare:
        try:
            payload = base64.b64decode(json.loads(document)["share"], validate=True)
        except (ValueError, KeyError, TypeError) as exc:
            raise ShareCorruptedError("not a Cipherstream share JSON document") from exc
        return cls.from_bytes(payload)


def _replace_checksum(share: SecretShare, checksum: bytes) -> SecretShare:
    return SecretShare(
        share.split_id,
        share.index,
        share.threshold,
        share.share_count,
        share.prime_bits,
        share.encoding,
        share.secret_length,
        share.frac_bits,
        share.commitment,
        share.values,
        checksum,
    )


def _commitment(split_id: bytes, prime_bits: int, elements: Sequence[int]) -> bytes:
    """SHA-256 over the split id and every element (nonce first), fixed width."""
    width = (prime_bits + 7) // 8
    hasher = hashlib.sha256(b"cipherstream/sharing/v1/commitment" + split_id)
    for element in elements:
        hasher.update(element.to_bytes(width, "big"))
    return hasher.digest()


def _nonce_count(prime_bits: int) -> int:
    # Each element holds prime_bits - 1 uniform bits once drawn below p; enough for 256 bits.
    return math.ceil(NONCE_BITS / (prime_bits - 1))


def _split_elements(
    elements: Sequence[int],
    *,
    threshold: int,
    share_count: int,
    prime_bits: int,
    encoding: Encoding,
    secret_length: int,
    frac_bits: int,
    randbelow: RandBelow,
) -> list[SecretShare]:
    if not 1 <= threshold <= share_count:
        raise ValueError(f"need 1 <= threshold <= share_count, got {threshold} of {share_count}")
    if share_count >= 1 << 16:
        raise ValueError("at most 65535 shares")
    prime = (1 << prime_bits) - 1
    split_id = randbelow(1 << (8 * SPLIT_ID_BYTES)).to_bytes(SPLIT_ID_BYTES, "big")
    nonce = [randbelow(prime) for _ in range(_nonce_count(prime_bits))]
    payload = nonce + list(elements)
    commitment = _commitment(split_id, prime_bits, payload)
    indices = range(1, share_count + 1)
    values_by_share: list[list[int]] = [[] for _ in indices]
    for element in payload:
        # f(x) = element + c_1 x + ... + c_{k-1} x^{k-1}, evaluated by Horner at x = 1..n.
        coefficients = [randbelow(prime) for _ in range(threshold - 1)]
        for share_values, x in zip(values_by_share, indices):
            accumulated = 0
            for coefficient in reversed(coefficients):
                accumulated = (accumulated + coefficient) * x % prime
            share_values.append((accumulated + element) % prime)
    return [
        SecretShare(
            split_id, x, threshold, share_count, prime_bits, encoding, secret_length, frac_bits, commitment, tuple(values)
        ).with_checksum()
        for x, values in zip(indices, values_by_share)
    ]


def _lagrange_at_zero(indices: Sequence[int], prime: int) -> list[int]:
    """Weights w_i with f(0) = sum w_i f(x_i) for any polynomial of degree < len(indices)."""
    weights = []
    for i in indices:
        numerator, denominator = 1, 1
        for j in indices:
            if j != i:
                numerator = numerator * j % prime
                denominator = denominator * (j - i) % prime
        weights.append(numerator * pow(denominator, -1, prime) % prime)
    return weights


def _interpolate(shares: Sequence[SecretShare]) -> list[int]:
    prime = shares[0].prime
    weights = _lagrange_at_zero([share.index for share in shares], prime)
    columns = zip(*(share.values for share in shares))
    return [sum(weight * value for weight, value in zip(weights, column)) % prime for column in columns]


def _check_compatible(shares: Sequence[SecretShare], encoding: Encoding) -> None:
    if not shares:
        raise NotEnoughSharesError("no shares given")
    first = shares[0]
    for share in shares:
        share.check()
    for share in shares[1:]:
        for name in ("split_id", "threshold", "share_count", "prime_bits", "encoding", "secret_length", "frac_bits", "commitment"):
            if getattr(share, name) != getattr(first, name):
                raise ShareMismatchError(
                    f"share {share.index} and share {first.index} differ in {name}: they come from different splits"
                )
        if len(share.values) != len(first.values):
            raise ShareMismatchError(f"share {share.index} has {len(share.values)} values, share {first.index} {len(first.values)}")
    if first.encoding != encoding:
        helper = "combine_floats" if first.encoding == "fixed_point" else "combine_shares"
        raise ShareMismatchError(f"these shares hold {first.encoding} values: use {helper}")
    indices = [share.index for share in shares]
    if len(set(indices)) != len(indices):
        raise ShareMismatchError(f"repeated share index among {sorted(indices)}")
    if any(not 1 <= index <= first.share_count for index in indices):
        raise ShareMismatchError(f"share index outside 1..{first.share_count} among {sorted(indices)}")
    if len(shares) < first.threshold:
        raise NotEnoughSharesError(f"{len(shares)} shares given, {first.threshold} needed")


def _combine_elements(shares: Sequence[SecretShare], encoding: Encoding) -> list[int]:
    """Check, interpolate from the first k shares, verify the commitment; on failure name the
    shares that do not fit, if there are spare shares to find them with."""
    _check_compatible(shares, encoding)
    first = shares[0]
    k = first.threshold

    def verified(subset: Sequence[SecretShare]) -> list[int] | None:
        elements = _interpolate(subset)
        return elements if _commitment(first.split_id, first.prime_bits, elements) == first.commitment else None

    elements = verified(shares[:k])
    if elements is not None:
        return elements[_nonce_count(first.prime_bits) :]
    if len(shares) > k:
        for subset in itertools.islice(itertools.combinations(shares, k), MAX_SUBSETS_TRIED):
            if verified(subset) is not None:
                good = {share.index for share in subset}
                bad = sorted(share.index for share in shares if share.index not in good and verified([*subset[1:], share]) is None)
                raise ShareVerificationError(
                    f"shares {bad} do not fit the commitment of split {first.split_id.hex()}; shares {sorted(good)} do"
                )
    raise ShareVerificationError(
        f"the secret rebuilt from shares {sorted(share.index for share in shares)} does not match its commitment: "
        "a share was altered, or comes from another split"
    )


def split_secret(secret: bytes, *, threshold: int, share_count: int, randbelow: RandBelow = secrets.randbelow) -> list[SecretShare]:
    """Split bytes of any length into `share_count` shares, any `threshold` of which rebuild them.
    `randbelow(n)` draws uniform integers in [0, n); inject it only in tests.

    >>> shares = split_secret(b"", threshold=1, share_count=1)
    >>> combine_shares(shares)
    b''
    """
    chunk_bytes = BYTES_PER_ELEMENT
    elements = [int.from_bytes(secret[start : start + chunk_bytes], "big") for start in range(0, len(secret), chunk_bytes)]
    return _split_elements(
        elements,
        threshold=threshold,
        share_count=share_count,
        prime_bits=BYTES_PRIME_BITS,
        encoding="bytes",
        secret_length=len(secret),
        frac_bits=0,
        randbelow=randbelow,
    )


def combine_shares(shares: Sequence[SecretShare]) -> bytes:
    """Rebuild bytes from at least `threshold` shares of one split, in any order.

    >>> shares = split_secret(bytes(range(200)), threshold=3, share_count=5)
    >>> combine_shares(shares[2:]) == bytes(range(200))
    True
    >>> combine_shares(shares[:2])
    Traceback (most recent call last):
    ...
    services.crypto.sharing.NotEnoughSharesError: 2 shares given, 3 needed
    """
    elements = _combine_elements(shares, "bytes")
    length = shares[0].secret_length
    chunk_bytes = BYTES_PER_ELEMENT
    pieces = []
    for position, element in enumerate(elements):
        piece_length = min(chunk_bytes, length - position * chunk_bytes)
        pieces.append(element.to_bytes(piece_length, "big"))
    return b"".join(pieces)


def split_floats(
    values: Iterable[float],
    *,
    threshold: int,
    share_count: int,
    frac_bits: int = DEFAULT_FRAC_BITS,
    randbelow: RandBelow = secrets.randbelow,
) -> list[SecretShare]:
    """Split a float vector (model weights) by fixed-point encoding: round(v * 2^frac_bits)
    as an element of GF(2^127 - 1), negatives as p - |v|. Rebuilt values are within
    2^-(frac_bits+1) of the originals.

    >>> shares = split_floats([0.1, -2.5, 1e6], threshold=2, share_count=3)
    >>> [round(value, 9) for value in combine_floats(shares[1:])]
    [0.1, -2.5, 1000000.0]
    """
    prime = (1 << FLOATS_PRIME_BITS) - 1
    limit = 1 << (FLOATS_PRIME_BITS - 2 - frac_bits)
    elements = []
    for position, value in enumerate(values):
        if not math.isfinite(value) or abs(value) >= limit:
            raise ValueError(f"value {value!r} at {position} is not finite or exceeds +-2^{FLOATS_PRIME_BITS - 2 - frac_bits}")
        elements.append(round(value * (1 << frac_bits)) % prime)
    return _split_elements(
        elements,
        threshold=threshold,
        share_count=share_count,
        prime_bits=FLOATS_PRIME_BITS,
        encoding="fixed_point",
        secret_length=len(elements),
        frac_bits=frac_bits,
        randbelow=randbelow,
    )


def combine_floats(shares: Sequence[SecretShare]) -> list[float]:
    """Rebuild a float vector split by `split_floats`."""
    elements = _combine_elements(shares, "fixed_point")
    prime = shares[0].prime
    scale = 1 << shares[0].frac_bits
    return [(element if element <= prime // 2 else element - prime) / scale for element in elements]
