"""The obfuscator pool: refills in the background, never blocks, gives each taker distinct obfuscators."""
from __future__ import annotations

import threading
import time

from services.crypto.paillier import DjnObfuscators, FastEncryptor, ObfuscatorPool, generate_keypair, to_phe_encrypted

PUBLIC, PRIVATE = generate_keypair(2048)
MAKER = DjnObfuscators(PUBLIC)


def wait_until(condition, timeout_s: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_pool_fills_in_the_background_and_refills_after_concurrent_takes() -> None:
    with ObfuscatorPool(PUBLIC, target_size=48, maker=MAKER) as pool:
        assert wait_until(lambda: pool.ready == 48)
        taken: list[int] = []
        lock = threading.Lock()

        def take() -> None:
            got = [int(pool.take()) for _ in range(10)] + [int(o) for o in pool.take_many(15)]
            with lock:
                taken.extend(got)

        threads = [threading.Thread(target=take) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(taken) == 100 and len(set(taken)) == 100  # more than the pool held: some made inline
        assert all(PRIVATE.decrypt_raw(obfuscator) == 0 for obfuscator in taken[:5])
        assert wait_until(lambda: pool.ready == 48)  # the filler woke up and topped it up
        ciphertext = FastEncryptor(PUBLIC, pool).encrypt_fixed([2.5], -8)[0]
        assert PRIVATE.to_phe().decrypt(to_phe_encrypted(PUBLIC, ciphertext, -8)) == 2.5


def test_an_empty_pool_makes_obfuscators_inline_instead_of_waiting() -> None:
    pool = ObfuscatorPool(PUBLIC, target_size=4, background=False, maker=MAKER)
    assert pool.ready == 0
    started = time.monotonic()
    obfuscators = [*pool.take_many(3), pool.take()]
    assert time.monotonic() - started < 5 and len({int(o) for o in obfuscators}) == 4
    pool.close()


def test_close_stops_the_filler_thread() -> None:
    pool = ObfuscatorPool(PUBLIC, target_size=8, maker=MAKER)
    thread = pool._thread
    assert thread is not None and thread.is_alive()
    pool.close()
    assert not thread.is_alive()
    assert pool.take() is not None  # still usable after close: inline
