"""The partner's own state, in the partner's own Redis (never the bank's).

`pf:<record>`      features of a person (float64 vector in FEATURE_NAMES order)
`pnid:<hash>`      -> partner record id, by the identity hash (SHA-256 of the national id), which
                   is also the id PSI aligns on: no raw national id is kept after ingest
`pjoin:<join id>`  -> partner record id, after PSI; `prjoin:<record>` -> join id
`pmodel:<model>`   the partner's half of a federated model: JSON {version, weights, mean, scale}
`psbt:<model>`     the partner's half of a SecureBoost model: JSON {name, version, its split table}
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import redis.asyncio as aioredis

from services.models.secureboost import SplitTable
from services.partner.features import FEATURE_NAMES


@dataclass(frozen=True)
class PartnerModel:
    """w_p for one federated model, over standardised partner features."""

    name: str
    version: str
    weights: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    def partial_scores(self, features: np.ndarray) -> np.ndarray:
        """w_p . (x - mean) / scale for each row of `features`."""
        return ((features - self.mean) / self.scale) @ self.weights

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "version": self.version, "weights": self.weights.tolist(),
                           "mean": self.mean.tolist(), "scale": self.scale.tolist()})

    @classmethod
    def from_json(cls, raw: bytes | str) -> PartnerModel:
        values = json.loads(raw)
        return cls(values["name"], values["version"], *(np.asarray(values[key], dtype=np.float64)
                                                         for key in ("weights", "mean", "scale")))


@dataclass
class PartnerStore:
    redis: aioredis.Redis
    key_prefix: str

    def key(self, kind: str, name: str) -> str:
        return f"{self.key_prefix}{kind}:{name}"

    async def put_people(self, rows: list[tuple[str, str, list[float]]]) -> None:
        """(record id, identity hash, feature vector) for each person, in one round trip."""
        pipeline = self.redis.pipeline(transaction=False)
        for record_id, identity_hash, vector in rows:
            pipeline.set(self.key("pf", record_id), np.asarray(vector, dtype=np.float64).tobytes())
            pipeline.set(self.key("pnid", identity_hash), record_id)
        await pipeline.execute()

    async def delete_people(self, rows: list[tuple[str, str | None]]) -> None:
        """Erase people: features, identity and join id. (record id, identity hash if known)"""
        join_ids = await self.redis.mget([self.key("prjoin", record_id) for record_id, _ in rows]) if rows else []
        pipeline = self.redis.pipeline(transaction=False)
        for (record_id, identity_hash), join_id in zip(rows, join_ids):
            pipeline.delete(self.key("pf", record_id), self.key("prjoin", record_id))
            if identity_hash:
                pipeline.delete(self.key("pnid", identity_hash))
            if join_id:
                pipeline.delete(self.key("pjoin", join_id.decode()))
        await pipeline.execute()

    async def record_ids(self, identity_hashes: list[str]) -> list[str | None]:
        found = await self.redis.mget([self.key("pnid", h) for h in identity_hashes]) if identity_hashes else []
        return [value.decode() if value else None for value in found]

    async def link_join_ids(self, joined: dict[str, str]) -> dict[str, str]:
        """Record PSI's new matches (identity hash -> join id); returns join id -> record id."""
        hashes = list(joined)
        record_ids = await self.record_ids(hashes)
        links = {joined[h]: record for h, record in zip(hashes, record_ids) if record}
        pipeline = self.redis.pipeline(transaction=False)
        for join_id, record_id in links.items():
            pipeline.set(self.key("pjoin", join_id), record_id)
            pipeline.set(self.key("prjoin", record_id), join_id)
        await pipeline.execute()
        return links

    async def join_ids_of(self, record_ids: list[str]) -> list[str | None]:
        found = await self.redis.mget([self.key("prjoin", record) for record in record_ids]) if record_ids else []
        return [value.decode() if value else None for value in found]

    async def features_by_join_id(self, join_ids: list[str]) -> dict[str, np.ndarray]:
        """Feature vectors of the aligned people among `join_ids` (others are left out)."""
        if not join_ids:
            return {}
        record_ids = await self.redis.mget([self.key("pjoin", join_id) for join_id in join_ids])
        known = [(join_id, record.decode()) for join_id, record in zip(join_ids, record_ids) if record]
        vectors = await self.redis.mget([self.key("pf", record) for _, record in known]) if known else []
        return {join_id: np.frombuffer(vector, dtype=np.float64) for (join_id, _), vector in zip(known, vectors)
                if vector is not None}

    async def put_model(self, model: PartnerModel) -> None:
        if model.weights.shape != (len(FEATURE_NAMES),):
            raise ValueError(f"a partner model has {len(FEATURE_NAMES)} weights, got {model.weights.shape}")
        await self.redis.set(self.key("pmodel", model.name), model.to_json())

    async def models(self) -> list[PartnerModel]:
        keys = [key async for key in self.redis.scan_iter(match=self.key("pmodel", "*"))]
        values = await self.redis.mget(keys) if keys else []
        return [PartnerModel.from_json(value) for value in values if value is not None]

    async def put_split_table(self, name: str, version: str, table: SplitTable) -> None:
        """Keep a SecureBoost model's split table (columns in FEATURE_NAMES order, as trained)."""
        if any(not 0 <= rule.column < len(FEATURE_NAMES) for rule in table.rules):
            raise ValueError(f"a split table's columns are 0 to {len(FEATURE_NAMES) - 1}")
        await self.redis.set(self.key("psbt", name), json.dumps({"name": name, "version": version,
                                                                 "rules": table.to_bytes().decode()}))

    async def split_tables(self) -> dict[str, tuple[str, SplitTable]]:
        """model name -> (partner version, split table) of every SecureBoost model."""
        keys = [key async for key in self.redis.scan_iter(match=self.key("psbt", "*"))]
        values = await self.redis.mget(keys) if keys else []
        tables = {}
        for value in values:
            if value is not None:
                stored = json.loads(value)
                tables[stored["name"]] = (stored["version"], SplitTable.from_bytes(stored["rules"].encode()))
        return tables

    async def all_aligned_join_ids(self) -> list[str]:
        prefix = self.key("pjoin", "")
        return [key.decode()[len(prefix):] async for key in self.redis.scan_iter(match=f"{prefix}*", count=1000)]

    async def all_identity_hashes(self) -> list[str]:
        """Everyone the partner holds, as PSI ids (for a new session's full run)."""
        prefix = self.key("pnid", "")
        return [key.decode()[len(prefix):] async for key in self.redis.scan_iter(match=f"{prefix}*", count=1000)]
