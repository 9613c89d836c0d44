"""Paillier, fast and interoperable with `phe` (python-paillier).

Ciphertexts are plain integers mod n^2 with phe's conventions: g = n + 1, fixed-point values
encoded as round(value * 16**-exponent) mod n (negatives as n - |v|), so
`phe.EncryptedNumber(public_key.to_phe(), c, exponent)` decrypts ours with phe's private key
and phe's `ciphertext(be_secure=False)` decrypts with ours. What makes it fast:

- Encryption is c = (1 + n*m) * r mod n^2 with a ready obfuscator r: one modular multiplication.
- Obfuscators are Damgard-Jurik-Nielsen: r = h_s^alpha with h_s = (-x^2)^n mod n^2 fixed per key
  and a short random alpha (half the modulus length, as DJN propose), computed with a
  fixed-base comb table: about 128 multiplications instead of a 2048-bit exponentiation.
  They do not depend on data, so `ObfuscatorPool` keeps them ready in the background.
- Scalars are short exponents: multiplying by -3 is (c^-1)^3, never c^(n-3).
- `Packer` puts several fixed-point values in one plaintext (slots with guard bits), so one
  encryption, one addition or one decryption serves them all.
- gmpy2 for every big-integer operation; decryption by CRT over p^2 and q^2.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import gmpy2
import phe
from phe import paillier as phe_paillier

from services.core.errors import ConfigError

KEY_BITS_ALLOWED = (2048, 3072)
BASE = 16  # phe's EncodedNumber base
COMB_WINDOW_BITS = 8


@dataclass(frozen=True)
class PaillierPublicKey:
    n: int

    @cached_property
    def nsquare(self) -> int:
        return self.n * self.n

    @property
    def bits(self) -> int:
        return self.n.bit_length()

    @cached_property
    def max_int(self) -> int:
        """Largest magnitude phe encodes as positive; above n - max_int is negative."""
        return self.n // 3 - 1

    @cached_property
    def _n(self) -> gmpy2.mpz:
        return gmpy2.mpz(self.n)

    @cached_property
    def _nsquare(self) -> gmpy2.mpz:
        return gmpy2.mpz(self.nsquare)

    def to_phe(self) -> phe_paillier.PaillierPublicKey:
        return phe_paillier.PaillierPublicKey(self.n)

    @classmethod
    def from_phe(cls, key: phe_paillier.PaillierPublicKey) -> PaillierPublicKey:
        return cls(int(key.n))


@dataclass(frozen=True)
class PaillierPrivateKey:
    public_key: PaillierPublicKey
    p: int = field(repr=False)
    q: int = field(repr=False)

    def __post_init__(self) -> None:
        if self.p * self.q != self.public_key.n:
            raise ConfigError("private key does not match its public key (p * q != n)")

    @cached_property
    def _crt(self) -> tuple[gmpy2.mpz, ...]:
        p, q = gmpy2.mpz(self.p), gmpy2.mpz(self.q)
        psquare, qsquare = p * p, q * q
        n = gmpy2.mpz(self.public_key.n)
        hp = gmpy2.invert((gmpy2.powmod(n + 1, p - 1, psquare) - 1) // p, p)
        hq = gmpy2.invert((gmpy2.powmod(n + 1, q - 1, qsquare) - 1) // q, q)
        return p, q, psquare, qsquare, hp, hq, gmpy2.invert(p, q)

    def decrypt_raw(self, ciphertext: int) -> int:
        """The plaintext in [0, n) (phe's raw_decrypt, by CRT)."""
        p, q, psquare, qsquare, hp, hq, p_inverse = self._crt
        c = gmpy2.mpz(ciphertext)
        mp = (gmpy2.powmod(c, p - 1, psquare) - 1) // p * hp % p
        mq = (gmpy2.powmod(c, q - 1, qsquare) - 1) // q * hq % q
        return int(mp + ((mq - mp) * p_inverse % q) * p)

    def decrypt_fixed(self, ciphertext: int, exponent: int) -> float:
        return decode_fixed(self.decrypt_raw(ciphertext), exponent, self.public_key)

    def to_phe(self) -> phe_paillier.PaillierPrivateKey:
        return phe_paillier.PaillierPrivateKey(self.public_key.to_phe(), self.p, self.q)

    @classmethod
    def from_phe(cls, key: phe_paillier.PaillierPrivateKey) -> PaillierPrivateKey:
        return cls(PaillierPublicKey.from_phe(key.public_key), int(key.p), int(key.q))


def generate_keypair(bits: int = 2048) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """A new key pair (phe's safe prime generation, gmpy2-backed)."""
    if bits not in KEY_BITS_ALLOWED:
        raise ConfigError(f"Paillier keys are {' or '.join(map(str, KEY_BITS_ALLOWED))} bits, not {bits}")
    public, private = phe_paillier.generate_paillier_keypair(n_length=bits)
    ours = PaillierPrivateKey.from_phe(private)
    return ours.public_key, ours


def encode_fixed(value: float, exponent: int, public_key: PaillierPublicKey) -> int:
    """value as phe encodes it with this exponent: round(value * 16**-exponent) mod n.

    >>> key = PaillierPublicKey(101 * 103)
    >>> encode_fixed(-1.5, -1, key) == key.n - 24, decode_fixed(encode_fixed(-1.5, -1, key), -1, key)
    (True, -1.5)
    """
    scaled = round(value * BASE ** -exponent) if exponent < 0 else round(value / BASE ** exponent)
    if abs(scaled) > public_key.max_int:
        raise OverflowError(f"{value} does not fit at exponent {exponent}")
    return scaled % public_key.n


def decode_fixed(encoding: int, exponent: int, public_key: PaillierPublicKey) -> float:
    signed = signed_int(encoding, public_key)
    return float(signed * (BASE ** exponent) if exponent >= 0 else signed / BASE ** -exponent)


def signed_int(encoding: int, public_key: PaillierPublicKey) -> int:
    """phe's reading of a plaintext: above n - max_int it stands for a negative number."""
    if encoding >= public_key.n - public_key.max_int:
        return encoding - public_key.n
    if encoding > public_key.max_int:
        raise OverflowError("plaintext overflowed: it is neither a positive nor a negative encoding")
    return encoding


def add_raw(public_key: PaillierPublicKey, c1: int, c2: int) -> int:
    return int(gmpy2.mpz(c1) * c2 % public_key._nsquare)


def scalar_mul_raw(public_key: PaillierPublicKey, ciphertext: int, scalar: int) -> int:
    """[[m]] -> [[scalar * m]] with an exponent as short as the scalar (negative: invert first)."""
    nsquare = public_key._nsquare
    if scalar < 0:
        return int(gmpy2.powmod(gmpy2.invert(gmpy2.mpz(ciphertext), nsquare), -scalar, nsquare))
    return int(gmpy2.powmod(gmpy2.mpz(ciphertext), scalar, nsquare))


def to_phe_encrypted(public_key: PaillierPublicKey, ciphertext: int, exponent: int) -> phe.EncryptedNumber:
    return phe.EncryptedNumber(public_key.to_phe(), ciphertext, exponent)


class DjnObfuscators:
    """Makes obfuscators r = h_s^alpha mod n^2 with a comb table over the fixed base h_s."""

    def __init__(self, public_key: PaillierPublicKey, exponent_bits: int | None = None) -> None:
        self.public_key = public_key
        n, nsquare = public_key._n, public_key._nsquare
        # DJN: alpha of about half the modulus length.
        self.exponent_bits = exponent_bits or math.ceil(public_key.bits / 2)
        x = gmpy2.mpz(secrets.randbelow(public_key.n - 2) + 2)
        h = (-x * x) % n
        base = gmpy2.powmod(h, n, nsquare)
        self._rows = []
        window = 1 << COMB_WINDOW_BITS
        for _ in range(math.ceil(self.exponent_bits / COMB_WINDOW_BITS)):
            row = [gmpy2.mpz(1)]
            for _ in range(window - 1):
                row.append(row[-1] * base % nsquare)
            self._rows.append(row)
            base = row[-1] * base % nsquare  # base ** window

    def make(self) -> gmpy2.mpz:
        alpha = secrets.randbits(self.exponent_bits)
        nsquare = self.public_key._nsquare
        result = gmpy2.mpz(1)
        mask = (1 << COMB_WINDOW_BITS) - 1
        for row in self._rows:
            digit = alpha & mask
            if digit:
                result = result * row[digit] % nsquare
            alpha >>= COMB_WINDOW_BITS
        return result


class ObfuscatorPool:
    """Obfuscators ready before they are needed, refilled by a background thread."""

    def __init__(self, public_key: PaillierPublicKey, target_size: int = 4096, background: bool = True,
                 exponent_bits: int | None = None) -> None:
        self.maker = DjnObfuscators(public_key, exponent_bits)
        self.target_size = target_size
        self._ready: deque[gmpy2.mpz] = deque()
        self._wanted = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._fill, name="paillier-obfuscators", daemon=True)
            self._thread.start()
            self._wanted.set()

    def _fill(self) -> None:
        while not self._stopped.is_set():
            if len(self._ready) >= self.target_size:
                self._wanted.clear()
                self._wanted.wait(0.5)
                continue
            self._ready.append(self.maker.make())

    def take(self) -> gmpy2.mpz:
        """A ready obfuscator, or one made now if the pool is empty (never blocks)."""
        try:
            obfuscator = self._ready.popleft()
        except IndexError:
            obfuscator = self.maker.make()
        if len(self._ready) < self.target_size // 2:
            self._wanted.set()
        return obfuscator

    def prefill(self, count: int) -> None:
        """Make `count` obfuscators now, in this thread (start-up, or before a known burst)."""
        self._ready.extend(self.maker.make() for _ in range(count))

    def take_many(self, count: int) -> list[gmpy2.mpz]:
        return [self.take() for _ in range(count)]

    @property
    def ready(self) -> int:
        return len(self._ready)

    def close(self) -> None:
        self._stopped.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ObfuscatorPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FastEncryptor:
    """Encryption with a ready obfuscator: one multiplication mod n^2 per value."""

    def __init__(self, public_key: PaillierPublicKey, pool: ObfuscatorPool | None = None) -> None:
        self.public_key = public_key
        self.pool = pool or ObfuscatorPool(public_key, background=False)

    def encrypt_raw(self, plaintext: int) -> int:
        key = self.public_key
        if not 0 <= plaintext < key.n:
            raise OverflowError("plaintext must be in [0, n)")
        # (1 + n*m) mod n^2 is the unobfuscated ciphertext with g = n + 1.
        return int((key._n * plaintext + 1) * self.pool.take() % key._nsquare)

    def encrypt_fixed(self, values: Sequence[float], exponent: int) -> list[int]:
        return [self.encrypt_raw(encode_fixed(value, exponent, self.public_key)) for value in values]


@dataclass(frozen=True)
class Packer:
    """Several signed integers in one plaintext: slot i holds value_i + offset at bit i * slot_bits.

    Each value must satisfy |v| < 2**(value_bits - 1); slots keep guard bits so that the sum of up
    to `max_terms` packed plaintexts (homomorphic additions) never carries into the next slot.

    >>> packer = Packer(PaillierPublicKey((1 << 2047) + 1), value_bits=16, max_terms=4)
    >>> packer.unpack(packer.pack([3, -5]) + packer.pack([1, 2]), count=2, terms=2)
    [4, -3]
    """

    public_key: PaillierPublicKey
    value_bits: int
    max_terms: int = 1

    @property
    def slot_bits(self) -> int:
        return self.value_bits + max(1, math.ceil(math.log2(self.max_terms))) + 1

    @property
    def slots(self) -> int:
        # Stay below phe's positive range (n // 3) so a packed plaintext is never read as negative.
        return (self.public_key.max_int.bit_length() - 1) // self.slot_bits

    @property
    def offset(self) -> int:
        return 1 << (self.value_bits - 1)

    def pack(self, values: Sequence[int]) -> int:
        if len(values) > self.slots:
            raise ValueError(f"{len(values)} values do not fit in {self.slots} slots")
        packed = 0
        for index, value in enumerate(values):
            if not -self.offset < value < self.offset:
                raise OverflowError(f"{value} does not fit in {self.value_bits} signed bits")
            packed |= (value + self.offset) << (index * self.slot_bits)
        return packed

    def unpack(self, plaintext: int, count: int | None = None, terms: int = 1) -> list[int]:
        if terms > self.max_terms:
            raise OverflowError(f"a sum of {terms} packed values may have overflowed ({self.max_terms} allowed)")
        mask = (1 << self.slot_bits) - 1
        return [((plaintext >> (index * self.slot_bits)) & mask) - terms * self.offset
                for index in range(self.slots if count is None else count)]

    def pack_fixed(self, values: Sequence[float], precision_bits: int) -> int:
        return self.pack([round(value * (1 << precision_bits)) for value in values])

    def unpack_fixed(self, plaintext: int, precision_bits: int, count: int | None = None, terms: int = 1) -> list[float]:
        return [value / (1 << precision_bits) for value in self.unpack(plaintext, count, terms)]


def save_public_key(path: Path, key: PaillierPublicKey) -> None:
    path.write_text(json.dumps({"kind": "paillier-public", "n": hex(key.n)}))


def load_public_key(path: Path) -> PaillierPublicKey:
    document = _read_key_file(path, "paillier-public")
    return PaillierPublicKey(int(document["n"], 16))


def save_private_key(path: Path, key: PaillierPrivateKey) -> None:
    """Written with mode 0600 from the start: the key never sits readable by others."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(json.dumps({"kind": "paillier-private", "n": hex(key.public_key.n), "p": hex(key.p), "q": hex(key.q)}))


def load_private_key(path: Path) -> PaillierPrivateKey:
    document = _read_key_file(path, "paillier-private")
    return PaillierPrivateKey(PaillierPublicKey(int(document["n"], 16)), int(document["p"], 16), int(document["q"], 16))


def _read_key_file(path: Path, kind: str) -> dict[str, str]:
    try:
        document = json.loads(path.read_text())
        if document.get("kind") != kind:
            raise ValueError(f"holds {document.get('kind')!r}")
        return document  # type: ignore[no-any-return]
    except (OSError, ValueError, AttributeError) as error:
        raise ConfigError(f"{path} is not a {kind} key file: {error}") from error


class KeyRing:
    """Key files in one directory: `<id>.key` (private, 0600) and `<id>.pub`; `current` names the
    key new data is encrypted under. Rotation adds a key; old ones stay to decrypt what they made."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def current(self) -> tuple[str, PaillierPrivateKey]:
        marker = self.directory / "current"
        if not marker.exists():
            raise ConfigError(f"no Paillier key in {self.directory}: run a rotation first")
        key_id = marker.read_text().strip()
        return key_id, self.get(key_id)

    def rotate(self, bits: int = 2048) -> str:
        _, private = generate_keypair(bits)
        key_id = f"k{len(self.key_ids()) + 1:04d}-{secrets.token_hex(4)}"
        save_private_key(self.directory / f"{key_id}.key", private)
        save_public_key(self.directory / f"{key_id}.pub", private.public_key)
        (self.directory / "current.tmp").write_text(key_id)
        (self.directory / "current.tmp").replace(self.directory / "current")  # atomic switch
        return key_id

    def key_ids(self) -> list[str]:
        return sorted(path.stem for path in self.directory.glob("*.pub"))

    def get(self, key_id: str) -> PaillierPrivateKey:
        return load_private_key(self.directory / f"{key_id}.key")

    def public(self, key_id: str) -> PaillierPublicKey:
        return load_public_key(self.directory / f"{key_id}.pub")
