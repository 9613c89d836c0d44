"""Obfuscators made fast (Damgard-Jurik-Nielsen), kept ready in a pool, and encryption with them.

A Paillier ciphertext is (1 + n*m) * r^n mod n^2. phe computes r^n with a 2048-bit exponent per
encryption (about 10 ms at 2048 bits). Damgard, Jurik and Nielsen (DJN) fix h_s = (-x^2)^n mod n^2
once per key and take r^n = h_s^alpha for a short random alpha; h_s^alpha is still an n-th residue,
so the ciphertext is an ordinary Paillier ciphertext that phe decrypts.

Exponent length. Semantic security then rests on h_s^alpha with a short alpha being
indistinguishable from a random n-th residue. The best attack known is generic: given a
ciphertext, strip (1 + n*m0) and search alpha with Pollard's kangaroo, about 2^(bits/2) steps. So
alpha needs twice the security level of the key: 2048-bit n gives 112-bit security (NIST SP
800-57), 3072-bit n gives 128; we take 256 bits for both (`SHORT_EXPONENT_BITS`). DJN's paper
takes half the modulus (1024 bits at 2048), a wider margin that costs four times the
multiplications: pass `exponent_bits=public_key.bits // 2` for it.

Fixed base, so precompute: a comb table holds h_s^(d * 2^(w*i)) for every w-bit digit d and
position i; h_s^alpha is then one multiplication per w-bit digit of alpha (24 for 256 bits at
w = 11) instead of one squaring per bit plus multiplications.

The pool: obfuscators do not depend on the data, so a background thread makes them ahead of need.
gmpy2 releases the GIL during big-number arithmetic when the thread's context allows it
(`allow_release_gil=True`, set in the filler thread only), so the filler runs on another core
while the encrypting thread works. An empty pool never blocks: the caller makes its own.
"""
from __future__ import annotations

import math
import secrets
import threading
from collections import deque
from collections.abc import Callable, Sequence

import gmpy2
from gmpy2 import mpz

from services.core.errors import ConfigError
from services.crypto.paillier_keys import PaillierPublicKey, PlaintextOverflowError, encode_fixed

SHORT_EXPONENT_BITS = 256
# Comb tables are sized to hold at most this many entries (~26 MB at 2048 bits, 512 bytes each).
MAX_TABLE_ENTRIES = 1 << 16
REFILL_BATCH = 32


def default_window_bits(exponent_bits: int) -> int:
    """The widest comb window whose table stays within MAX_TABLE_ENTRIES.

    >>> default_window_bits(256), default_window_bits(1024)
    (11, 9)
    """
    for window_bits in range(12, 1, -1):
        if math.ceil(exponent_bits / window_bits) << window_bits <= MAX_TABLE_ENTRIES:
            return window_bits
    return 2


class DjnObfuscators:
    """Makes obfuscators h_s^alpha mod n^2 (the r^n of a Paillier ciphertext) from a comb table.

    `random_bits` is the source of alpha (a secure default, injectable for tests, as phe's r_value).
    Any n-th residue serves as h_s, so each maker may pick its own (workers need not share one).

    >>> key = PaillierPublicKey(1_000_003 * 1_000_033)
    >>> maker = DjnObfuscators(key, random_bits=lambda bits: 5)
    >>> maker.make() == pow(maker.h_s, 5, key.nsquare)
    True
    """

    def __init__(self, public_key: PaillierPublicKey, exponent_bits: int | None = None,
                 window_bits: int | None = None, random_bits: Callable[[int], int] = secrets.randbits) -> None:
        self.public_key = public_key
        self.exponent_bits = exponent_bits or SHORT_EXPONENT_BITS
        if self.exponent_bits < 2 * 80:
            raise ConfigError(f"a DJN exponent of {self.exponent_bits} bits is too short to be secure")
        self.window_bits = window_bits or default_window_bits(self.exponent_bits)
        self._random_bits = random_bits
        n, nsquare = public_key.n_mpz, public_key.nsquare_mpz
        x = mpz(secrets.randbelow(public_key.n - 2) + 2)
        while gmpy2.gcd(x, n) != 1:  # practically never; gcd > 1 would factor n
            x = mpz(secrets.randbelow(public_key.n - 2) + 2)
        self.h_s = int(gmpy2.powmod(-x * x % n, n, nsquare))
        self._rows = self._comb_rows(mpz(self.h_s))

    def _comb_rows(self, base: mpz) -> list[list[mpz]]:
        nsquare, rows = self.public_key.nsquare_mpz, []
        for start in range(0, self.exponent_bits, self.window_bits):
            digits = 1 << min(self.window_bits, self.exponent_bits - start)
            row = [mpz(1), base]
            for _ in range(digits - 2):
                row.append(row[-1] * base % nsquare)
            rows.append(row)
            base = row[-1] * base % nsquare  # base^(2^w): the next digit position
        return rows

    def make(self) -> mpz:
        """A fresh obfuscator: one multiplication mod n^2 per nonzero window of alpha."""
        alpha = self._random_bits(self.exponent_bits)
        nsquare, mask, window_bits = self.public_key.nsquare_mpz, (1 << self.window_bits) - 1, self.window_bits
        result: mpz | None = None
        # Let other threads (a pool's filler, or the encrypting thread) run while GMP multiplies.
        with gmpy2.context(gmpy2.get_context(), allow_release_gil=True):
            for row in self._rows:
                digit = alpha & mask
                if digit:
                    result = row[digit] if result is None else result * row[digit] % nsquare
                alpha >>= window_bits
        return mpz(1) if result is None else result


class ObfuscatorPool:
    """Obfuscators made ahead of need by a background thread; `take` never waits for one.

    >>> key = PaillierPublicKey(1_000_003 * 1_000_033)
    >>> with ObfuscatorPool(key, target_size=8, background=False) as pool:
    ...     pool.prefill(8)
    ...     ready_before, taken, ready_after = pool.ready, pool.take_many(10), pool.ready
    >>> ready_before, len(taken), ready_after  # 8 from the pool, 2 made on the spot
    (8, 10, 0)
    """

    def __init__(self, public_key: PaillierPublicKey, target_size: int = 4096, background: bool = True, *,
                 exponent_bits: int | None = None, maker: DjnObfuscators | None = None) -> None:
        if maker is not None and maker.public_key != public_key:
            raise ConfigError("the obfuscator maker belongs to another key")
        self.public_key = public_key
        self.maker = maker or DjnObfuscators(public_key, exponent_bits)
        self.target_size = max(0, target_size)
        self._ready: deque[mpz] = deque()
        self._wanted = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        if background and self.target_size:
            self._thread = threading.Thread(target=self._fill, name="paillier-obfuscators", daemon=True)
            self._thread.start()
            self._wanted.set()

    def _fill(self) -> None:
        while not self._stopped.is_set():
            self._wanted.clear()
            missing = self.target_size - len(self._ready)
            if missing <= 0:
                self._wanted.wait(0.5)
                continue
            self._ready.extend(self.maker.make() for _ in range(min(missing, REFILL_BATCH)))

    def take(self) -> int:
        """A ready obfuscator r^n mod n^2, or one made now in this thread if the pool is empty."""
        return int(self.take_many_mpz(1)[0])

    def take_many(self, count: int) -> list[int]:
        return [int(obfuscator) for obfuscator in self.take_many_mpz(count)]

    def take_many_mpz(self, count: int) -> list[mpz]:
        """As `take_many`, as gmpy2 numbers (no conversion for callers that compute with gmpy2)."""
        taken: list[mpz] = []
        try:
            while len(taken) < count:
                taken.append(self._ready.popleft())
        except IndexError:
            taken.extend(self.maker.make() for _ in range(count - len(taken)))
        self._wanted.set()
        return taken

    def prefill(self, count: int) -> None:
        """Make `count` obfuscators now, in this thread (at start-up, or before a known burst)."""
        self._ready.extend(self.maker.make() for _ in range(count))

    @property
    def ready(self) -> int:
        return len(self._ready)

    def close(self) -> None:
        self._stopped.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ObfuscatorPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class FastEncryptor:
    """Encryption with DJN obfuscators: (1 + n*m) * h_s^alpha mod n^2, phe-compatible.

    Without a pool, each encryption makes its own obfuscator (the full cost, about 24
    multiplications mod n^2); with a filled pool it is one multiplication.

    >>> from services.crypto.paillier_keys import PaillierPrivateKey
    >>> private = PaillierPrivateKey(PaillierPublicKey(1_000_003 * 1_000_033), 1_000_003, 1_000_033)
    >>> encryptor = FastEncryptor(private.public_key)
    >>> [private.decrypt_fixed(c, -2) for c in encryptor.encrypt_fixed([1.5, -0.25], -2)]
    [1.5, -0.25]
    """

    def __init__(self, public_key: PaillierPublicKey, pool: ObfuscatorPool | None = None) -> None:
        if pool is not None and pool.public_key != public_key:
            raise ConfigError("the obfuscator pool belongs to another key")
        self.public_key = public_key
        self.pool = pool or ObfuscatorPool(public_key, target_size=0, background=False)

    def encrypt_raw(self, plaintext: int) -> int:
        """[[plaintext]] for a plaintext in [0, n) (phe's `raw_encrypt`)."""
        key = self.public_key
        if not 0 <= plaintext < key.n:
            raise PlaintextOverflowError("a raw plaintext lies in [0, n); encode negatives with encode_fixed")
        # g = n + 1, so g^m = 1 + n*m mod n^2: no exponentiation for the message part.
        return int((key.n_mpz * plaintext + 1) * self.pool.take_many_mpz(1)[0] % key.nsquare_mpz)

    def encrypt_many_raw(self, plaintexts: Sequence[int]) -> list[int]:
        key = self.public_key
        if any(not 0 <= plaintext < key.n for plaintext in plaintexts):
            raise PlaintextOverflowError("a raw plaintext lies in [0, n); encode negatives with encode_fixed")
        n, nsquare = key.n_mpz, key.nsquare_mpz
        return [int((n * plaintext + 1) * obfuscator % nsquare)
                for plaintext, obfuscator in zip(plaintexts, self.pool.take_many_mpz(len(plaintexts)), strict=True)]

    def encrypt_fixed(self, values: Sequence[float], exponent: int) -> list[int]:
        """Each value encoded as phe does at `exponent`, then encrypted."""
        return self.encrypt_many_raw([encode_fixed(value, exponent, self.public_key) for value in values])
