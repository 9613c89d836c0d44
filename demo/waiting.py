"""What the demo, `cipherstream up`, the suite and the benchmarks wait for before they go on:
scoring has stored every customer's profile (services/scoring/state.py keeps them), so no event
meets the unknown profile; PSI has aligned everyone the two parties share."""
from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio as aioredis

from services.core.config import Settings
from services.core.waiting import wait_until
from services.protocol.bank_keys import BankKeys
from services.scoring.state import ScoringState


async def wait_profiles_stored(settings: Settings, customer_ids: Iterable[str], timeout_s: float = 30.0) -> None:
    """Until scoring has stored every one of these customers' profiles in Redis (the key
    `<prefix>profile:<customer>` Scorer.store_profiles sets), so an event sent next meets its
    profile rather than the unknown one. Reading customer.profiles is not enough: scoring stores
    them some time after ingest has written them."""
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    keys = [ScoringState(redis, settings.redis_key_prefix).key("profile", customer) for customer in customer_ids]
    missing = len(keys)

    async def stored() -> bool:
        nonlocal missing
        present = 0
        for start in range(0, len(keys), 1000):  # EXISTS counts many keys in one round trip
            present += int(await redis.exists(*keys[start:start + 1000]))
        missing = len(keys) - present
        return missing == 0

    try:
        await wait_until(stored, timeout_s, lambda: f"scoring to store {len(keys)} profiles in Redis ({missing} missing)")
    finally:
        await redis.aclose()


async def wait_aligned(settings: Settings, shared_people: int, timeout_s: float = 120.0) -> int:
    """Until the exchange has stored a join id for `shared_people` customers (PSI over the exchange
    topics has aligned everyone shared); returns how many are aligned."""
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    pattern = BankKeys(settings.redis_key_prefix).join_pattern()
    aligned = 0

    async def all_aligned() -> bool:
        nonlocal aligned
        aligned = len([key async for key in redis.scan_iter(match=pattern, count=1000)])
        return aligned >= shared_people

    try:
        await wait_until(all_aligned, timeout_s, lambda: f"PSI to align {shared_people} customers ({aligned} aligned)")
        return aligned
    finally:
        await redis.aclose()
