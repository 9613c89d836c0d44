"""Paillier, fast and interoperable with `phe` (python-paillier): the one import for callers.

Who holds what. The key owner (the bank, in federated training) holds the private key and
encrypts; the other party holds only the public key, adds and scales ciphertexts, and learns
nothing of the plaintexts (semantic security under the decisional composite residuosity
assumption, plus the short-exponent assumption of the DJN obfuscators, see
`paillier_obfuscators`). Nothing here signs or authenticates: ciphertexts are malleable by design,
so the transport must authenticate who sent them.

Ciphertexts are plain ints mod n^2 in phe's conventions (g = n + 1, base-16 fixed point), so
`phe.EncryptedNumber(public_key.to_phe(), c, exponent)` decrypts ours with phe's private key and
phe's `ciphertext(be_secure=False)` decrypts with ours. What makes it fast:

- encryption with a ready DJN obfuscator is one multiplication mod n^2 (`FastEncryptor`), and
  making the obfuscator is ~24 more with a comb table, instead of phe's 2048-bit exponentiation;
  `ObfuscatorPool` makes them ahead of need in a background thread;
- scalars are short exponents: multiplying by -3 is (c^-1)^3, never c^(n-3);
- `Packer` puts dozens of values in one plaintext: one encryption, addition, decryption for all;
- gmpy2 for every big-integer operation, CRT decryption over p^2 and q^2.

Modules: `paillier_keys` (keys, encoding, raw operations), `paillier_obfuscators` (DJN, pool,
encryptor), `paillier_packing`, `paillier_keyfiles` (files, `KeyRing` with rotation).

>>> public = PaillierPublicKey(1_000_003 * 1_000_033)
>>> encryptor = FastEncryptor(public)
>>> c = add_raw(public, *encryptor.encrypt_fixed([1.5, 2.25], exponent=-2))
>>> import phe
>>> phe.PaillierPrivateKey(public.to_phe(), 1_000_003, 1_000_033).decrypt(to_phe_encrypted(public, c, -2))
3.75
"""
from services.crypto.paillier_keyfiles import (
    KeyRing,
    load_private_key,
    load_public_key,
    save_private_key,
    save_public_key,
)
from services.crypto.paillier_keys import (
    BASE,
    DEFAULT_KEY_BITS,
    KEY_BITS_ALLOWED,
    CiphertextError,
    PaillierPrivateKey,
    PaillierPublicKey,
    PlaintextOverflowError,
    add_plain_raw,
    add_raw,
    decode_fixed,
    encode_fixed,
    fixed_mantissa,
    generate_keypair,
    scalar_mul_raw,
    signed_int,
    to_phe_encrypted,
)
from services.crypto.paillier_obfuscators import (
    SHORT_EXPONENT_BITS,
    DjnObfuscators,
    FastEncryptor,
    ObfuscatorPool,
)
from services.crypto.paillier_packing import Packer, PackingError

__all__ = [
    "BASE",
    "DEFAULT_KEY_BITS",
    "KEY_BITS_ALLOWED",
    "SHORT_EXPONENT_BITS",
    "CiphertextError",
    "DjnObfuscators",
    "FastEncryptor",
    "KeyRing",
    "ObfuscatorPool",
    "Packer",
    "PackingError",
    "PaillierPrivateKey",
    "PaillierPublicKey",
    "PlaintextOverflowError",
    "add_plain_raw",
    "add_raw",
    "decode_fixed",
    "encode_fixed",
    "fixed_mantissa",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "save_private_key",
    "save_public_key",
    "scalar_mul_raw",
    "signed_int",
    "to_phe_encrypted",
]
