"""Scoring's state in the bank's Redis, so any scoring worker can serve any customer and an
erased customer is removed from one place.

`profile:<customer>`  the current profile (JSON)
`features:<customer>` hash: event id -> the feature vector that was scored (float64 bytes), kept
                      so a later response is learned against exactly what was scored; expires
                      after FEATURE_TTL_S
`learned:<response>`  "<partition>:<offset>" of the first record of this response id the learner met:
                      a channel that sends a response again (another record, same id) is learned
                      once, while the record itself, replayed after a crash from the checkpoint
                      before it, finds its own position there and is learned again (the model it
                      had taught was lost with the crash). The checkpoint, not the mark, says what
                      was learned (services/scoring/learner.py).
`style:<customer>`    the customer's style vector, [events seen, *STYLE_FEATURES] as float64
                      bytes (services/scoring/styles.py); expires after STYLE_TTL_S

It also reads the exchange's keys (services/protocol/bank_keys.py): a customer's join id, the
partner's partial scores and its SecureBoost split decisions for it.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from services.protocol.bank_keys import BankKeys
from services.protocol.stream_messages import CustomerProfile

FEATURE_TTL_S = 14 * 24 * 3600
LEARNED_MARK_TTL_S = 30 * 24 * 3600
STORE_FEATURES_LUA = """
local ttl = ARGV[1]
for i = 1, #KEYS do
  redis.call('HSET', KEYS[i], ARGV[2 * i], ARGV[2 * i + 1])
  redis.call('EXPIRE', KEYS[i], ttl)
end
return #KEYS
"""
PartialScoresOf = dict[str, str]
"""One customer's partner partial scores as stored: model name -> "<partner version>|<score>"."""


@dataclass
class ScoringState:
    redis: aioredis.Redis
    key_prefix: str
    _store_features_script: Any = None
    # Built once: the score handler names a join key per event.
    bank_keys: BankKeys = field(init=False)

    def __post_init__(self) -> None:
        self.bank_keys = BankKeys(self.key_prefix)

    def key(self, kind: str, customer_id: str) -> str:
        return f"{self.key_prefix}{kind}:{customer_id}"

    async def store_profiles(self, profiles: list[CustomerProfile], erased: list[str]) -> None:
        pipeline = self.redis.pipeline(transaction=False)
        for customer_id in erased:
            pipeline.delete(self.key("profile", customer_id), self.key("features", customer_id),
                            self.key("style", customer_id))
        for profile in profiles:
            pipeline.set(self.key("profile", profile.customer_id), json.dumps(asdict(profile)))
        await pipeline.execute()

    async def profiles_and_join_ids(self, customer_ids: list[str]) -> tuple[list[CustomerProfile | None], list[bytes | None]]:
        """Each customer's profile (None before it arrives) and join id (None if not aligned), in one round trip."""
        stored = await self.redis.mget([self.key("profile", customer) for customer in customer_ids]
                                       + [self.bank_keys.join(customer) for customer in customer_ids])
        profiles = [_profile_from_json(raw) if raw else None for raw in stored[:len(customer_ids)]]
        return profiles, list(stored[len(customer_ids):])

    async def partial_scores(self, join_ids: list[bytes | None]) -> list[PartialScoresOf]:
        """The partner's partial scores of each aligned customer, {} for the others."""
        return await self._hashes_of_aligned(join_ids, self.bank_keys.partial)

    async def split_decisions(self, join_ids: list[bytes | None]) -> list[dict[str, str]]:
        """The partner's SecureBoost split decisions of each aligned customer, {} for the others."""
        return await self._hashes_of_aligned(join_ids, self.bank_keys.sbt)

    async def _hashes_of_aligned(self, join_ids: list[bytes | None], key: Callable[[str], str]) -> list[dict[str, str]]:
        """The hash at `key(join id)` of each aligned customer (model name -> value), {} for the others;
        one round trip."""
        aligned = [index for index, join_id in enumerate(join_ids) if join_id]
        found: list[dict[str, str]] = [{} for _ in join_ids]
        if aligned:
            pipeline = self.redis.pipeline(transaction=False)
            for index in aligned:
                pipeline.hgetall(key(join_ids[index].decode()))  # type: ignore[union-attr]
            for index, stored in zip(aligned, await pipeline.execute()):
                found[index] = {model.decode(): value.decode() for model, value in stored.items()}
        return found

    async def store_features(self, scored: list[tuple[str, str, np.ndarray]]) -> None:
        """Keep (customer, event id, feature vector) of each scored event for learning later."""
        if not scored:
            return
        if self._store_features_script is None:
            self._store_features_script = self.redis.register_script(STORE_FEATURES_LUA)
        keys = [self.key("features", customer_id) for customer_id, _, _ in scored]
        args: list[bytes | str | int] = [FEATURE_TTL_S]
        for _, event_id, features in scored:
            args += [event_id, features.tobytes()]
        # One command for the batch: per-event HSET + EXPIRE cost a third of the stage's time.
        await self._store_features_script(keys=keys, args=args)

    async def learning_inputs(self, responses: list[LearningKey]) -> list[LearningInput]:
        """For each response record (response id, partition, offset, customer, event id): whether it is
        the first record of its response id (marking it so if nobody has), the features that were
        scored (None once expired or erased) and the customer's join id (None if not aligned)."""
        pipeline = self.redis.pipeline(transaction=True)
        for key in responses:
            mark = self.key("learned", key.response_id)
            pipeline.set(mark, f"{key.partition}:{key.offset}", nx=True, ex=LEARNED_MARK_TTL_S)
            pipeline.get(mark)
            pipeline.hget(self.key("features", key.customer_id), key.event_id)
            pipeline.get(self.bank_keys.join(key.customer_id))
        replies = await pipeline.execute()
        found: list[LearningInput] = []
        for index, key in enumerate(responses):
            _, first_at, stored, join_id = replies[4 * index:4 * index + 4]
            found.append(LearningInput(
                first_at == f"{key.partition}:{key.offset}".encode(),
                None if stored is None else np.frombuffer(stored, dtype=np.float64),
                join_id.decode() if join_id else None))
        return found

    async def partial_score(self, join_id: str, model_name: str) -> str | None:
        """One customer's stored partner partial score of one model ("<partner version>|<score>")."""
        stored = await self.redis.hget(self.bank_keys.partial(join_id), model_name)
        return stored.decode() if stored is not None else None

    async def partial_scores_of(self, join_ids: list[str], model_names: list[str]) -> list[str | None]:
        """`partial_score` for each (join id, model name) pair, in one round trip."""
        pipeline = self.redis.pipeline(transaction=False)
        for join_id, model_name in zip(join_ids, model_names, strict=True):
            pipeline.hget(self.bank_keys.partial(join_id), model_name)
        return [value.decode() if value is not None else None for value in await pipeline.execute()]


@dataclass(frozen=True)
class LearningKey:
    response_id: str
    partition: int
    offset: int
    customer_id: str
    event_id: str


@dataclass(frozen=True)
class LearningInput:
    first_record: bool
    features: np.ndarray | None
    join_id: str | None


def _profile_from_json(raw: bytes) -> CustomerProfile:
    values = json.loads(raw)
    values["products_held"] = tuple(values["products_held"])
    return CustomerProfile(**values)
