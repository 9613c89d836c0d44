"""Paillier at 2048 bits on one core: services/crypto/paillier.py against phe, in the same run.

Both sides are timed in alternating rounds (phe, fast, phe, fast...) so that load from other
processes on this shared machine falls on both alike.

- phe_encrypt_per_s / phe_decrypt_per_s: python-paillier with gmpy2, `encrypt(float)` and
  `decrypt` (each encryption computes its own r^n: a 2048-bit exponent mod n^2).
- fast_encrypt_per_s: `FastEncryptor.encrypt_fixed` with NO ready obfuscators: every ciphertext
  pays for its own DJN obfuscator h_s^alpha (256-bit alpha, comb table built once per key and not
  timed, like phe's key set-up) plus the encoding and the encryption multiplication. One thread.
- fast_encrypt_online_per_s: the same with obfuscators already in the pool (the pool's filler runs
  ahead of need on another core): the latency-critical rate, one multiplication mod n^2.
- fast_encrypt_djn_half_per_s: full cost again with DJN's own exponent length, half the modulus
  (1024-bit alpha), for whoever wants that margin; `encrypt_speedup_djn_half` against phe.
- fast_decrypt_per_s: `decrypt_fixed` (CRT over p^2 and q^2, the same math phe uses).
- pack_slots: 32-bit signed values per 2048-bit ciphertext, with guard bits for sums of up to
  1024 ciphertexts; `packed_values_*_per_s` are values per second when packed that way.
- encrypt_speedup: fast_encrypt_per_s / phe_encrypt_per_s (target >= 50).

Run: `python -m bench.he [--quick]`.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable

import gmpy2

from bench.common import parse_args, write_results
from services.crypto.paillier import (
    DjnObfuscators,
    FastEncryptor,
    ObfuscatorPool,
    Packer,
    generate_keypair,
    to_phe_encrypted,
)

EXPONENT = -8  # 16^-8 = 2^-32 fixed point


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> None:
    quick = parse_args(__doc__ or "").quick
    rounds = 3 if quick else 10
    phe_per_round, fast_per_round = (20, 400) if quick else (100, 3000)
    public, private = generate_keypair(2048)
    phe_public, phe_private = public.to_phe(), private.to_phe()
    values = [random.uniform(-100, 100) for _ in range(fast_per_round)]

    started = time.perf_counter()
    maker = DjnObfuscators(public)
    table_build_s = time.perf_counter() - started
    half_maker = DjnObfuscators(public, exponent_bits=public.bits // 2)
    full_cost = FastEncryptor(public, ObfuscatorPool(public, target_size=0, background=False, maker=maker))
    half_cost = FastEncryptor(public, ObfuscatorPool(public, target_size=0, background=False, maker=half_maker))
    online_pool = ObfuscatorPool(public, target_size=fast_per_round, background=False, maker=maker)
    online = FastEncryptor(public, online_pool)
    phe_ciphertexts = [phe_public.encrypt(value) for value in values[:phe_per_round]]
    fast_ciphertexts = full_cost.encrypt_fixed(values[:phe_per_round], EXPONENT)

    seconds = dict.fromkeys(["phe_encrypt", "fast_encrypt", "online", "half", "obfuscator", "phe_decrypt",
                             "fast_decrypt"], 0.0)
    half_per_round = fast_per_round // 4
    for _ in range(rounds):
        seconds["phe_encrypt"] += timed(lambda: [phe_public.encrypt(v) for v in values[:phe_per_round]])
        seconds["fast_encrypt"] += timed(lambda: full_cost.encrypt_fixed(values, EXPONENT))
        seconds["half"] += timed(lambda: half_cost.encrypt_fixed(values[:half_per_round], EXPONENT))
        seconds["obfuscator"] += timed(lambda: [maker.make() for _ in range(fast_per_round)])
        online_pool.prefill(fast_per_round)  # not timed: the filler thread does this ahead of need
        seconds["online"] += timed(lambda: online.encrypt_fixed(values, EXPONENT))
        seconds["phe_decrypt"] += timed(lambda: [phe_private.decrypt(c) for c in phe_ciphertexts])
        seconds["fast_decrypt"] += timed(lambda: [private.decrypt_fixed(c, EXPONENT) for c in fast_ciphertexts])

    # The fast path's ciphertexts are phe's: check a few before reporting any speed.
    for value, ciphertext in zip(values, full_cost.encrypt_fixed(values[:5], EXPONENT)):
        assert abs(phe_private.decrypt(to_phe_encrypted(public, ciphertext, EXPONENT)) - value) < 2**-31
    packer = Packer.for_values(public, value_bits=32, max_terms=1024)
    packed_values = [random.randrange(-packer.max_value, packer.max_value + 1) for _ in range(packer.slots)]
    assert packer.unpack(private.decrypt_raw(full_cost.encrypt_raw(packer.pack(packed_values)))) == packed_values

    def per_s(name: str, count_per_round: int) -> float:
        return rounds * count_per_round / seconds[name]

    phe_encrypt, fast_encrypt = per_s("phe_encrypt", phe_per_round), per_s("fast_encrypt", fast_per_round)
    half_encrypt = per_s("half", half_per_round)
    fast_decrypt = per_s("fast_decrypt", phe_per_round)
    write_results("he", {
        "phe_encrypt_per_s": round(phe_encrypt, 1),
        "fast_encrypt_per_s": round(fast_encrypt, 1),
        "encrypt_speedup": round(fast_encrypt / phe_encrypt, 1),
        "phe_decrypt_per_s": round(per_s("phe_decrypt", phe_per_round), 1),
        "fast_decrypt_per_s": round(fast_decrypt, 1),
        "pack_slots": packer.slots,
        "fast_encrypt_online_per_s": round(per_s("online", fast_per_round), 1),
        "obfuscator_per_s": round(per_s("obfuscator", fast_per_round), 1),
        "fast_encrypt_djn_half_per_s": round(half_encrypt, 1),
        "encrypt_speedup_djn_half": round(half_encrypt / phe_encrypt, 1),
        "packed_values_encrypt_per_s": round(fast_encrypt * packer.slots, 1),
        "packed_values_decrypt_per_s": round(fast_decrypt * packer.slots, 1),
    }, notes={
        "key_bits": 2048, "cores": 1, "rounds": rounds, "quick": quick,
        "djn_exponent_bits": maker.exponent_bits, "comb_window_bits": maker.window_bits,
        "comb_table_build_s": round(table_build_s, 3),
        "djn_half_exponent_bits": half_maker.exponent_bits, "djn_half_window_bits": half_maker.window_bits,
        "fixed_point_exponent": EXPONENT, "pack_value_bits": 32, "pack_slot_bits": packer.slot_bits,
        "pack_max_terms": packer.max_terms, "gmp": gmpy2.mp_version(),
    })


if __name__ == "__main__":
    main()
