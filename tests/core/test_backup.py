"""Backup and restore of Redis and SQL state, on SQLite and PostgreSQL, through the command line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import create_engine

from services.campaigns.definitions import Campaign
from services.campaigns.store import CampaignStore
from services.core.backup import BackupError, backup, restore
from services.core.config import Settings
from services.models.registry import ModelRegistry
from services.scoring.live_models import model_name
from services.scoring.scorer import Scorer
from services.tables import every_table


async def _state(settings: Settings, database_url: str) -> tuple[aioredis.Redis, Scorer]:
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    scorer = Scorer.start(redis, settings.redis_key_prefix, ModelRegistry(database_url))
    await redis.set(f"{settings.redis_key_prefix}profile:C1", "profile-of-C1")
    await redis.hset(f"{settings.redis_key_prefix}features:C1", mapping={"e1": b"\x00\x01\xff"})
    await redis.set(f"{settings.redis_key_prefix}offer:{{C1}}:camp:2026-11-25", "sent|e1", ex=3600)
    await redis.set("someone-else:key", "not ours")
    return redis, scorer


def _wipe_sql(database_url: str) -> None:
    engine = create_engine(database_url)
    every_table().drop_all(engine)
    engine.dispose()


async def test_restore_brings_back_every_key_ttl_and_registry_row(settings: Settings, database_url: str, tmp_path: Path) -> None:
    redis, scorer = await _state(settings, database_url)
    lineage_before = ModelRegistry(database_url).lineage(model_name("credit_card"))
    campaigns = CampaignStore(database_url)
    campaigns.put(Campaign.model_validate({"campaign_id": "console_made", "product": "credit_card", "value": 10,
                                           "triggers": ["app_login"], "channels": [{"channel": "sms", "template": "t"}]}),
                  actor="alice")
    campaigns.close()
    summary = await backup(redis, settings.redis_key_prefix, database_url, tmp_path / "backup")
    assert summary.redis_keys == 3 and summary.sql_rows >= 2 * len(scorer.models.live)

    await redis.delete(*[key async for key in redis.scan_iter(match=f"{settings.redis_key_prefix}*")])
    _wipe_sql(database_url)
    restored = await restore(redis, database_url, tmp_path / "backup", every_table())

    assert restored.redis_keys == 3
    assert await redis.get(f"{settings.redis_key_prefix}profile:C1") == b"profile-of-C1"
    assert await redis.hget(f"{settings.redis_key_prefix}features:C1", "e1") == b"\x00\x01\xff"
    assert 3500 < await redis.ttl(f"{settings.redis_key_prefix}offer:{{C1}}:camp:2026-11-25") <= 3600
    registry = ModelRegistry(database_url)
    assert registry.lineage(model_name("credit_card")) == lineage_before
    assert registry.latest(model_name("credit_card"))[1] is not None  # checkpoints come back byte for byte
    campaigns = CampaignStore(database_url)
    assert campaigns.get("console_made") is not None and campaigns.history("console_made")[0].actor == "alice"
    campaigns.put(campaigns.get("console_made"), actor="bob")  # type: ignore[arg-type]  # serials moved past restored ids
    campaigns.close()
    await redis.aclose()


async def test_damaged_backup_is_refused(settings: Settings, database_url: str, tmp_path: Path) -> None:
    redis, _ = await _state(settings, database_url)
    await backup(redis, settings.redis_key_prefix, database_url, tmp_path / "backup")
    with (tmp_path / "backup" / "redis.jsonl").open("a") as damaged:
        damaged.write(json.dumps({"key": "eA==", "ttl_ms": -1, "dump": "AAAA"}) + "\n")
    with pytest.raises(BackupError, match="checksum"):
        await restore(redis, database_url, tmp_path / "backup", every_table())
    await redis.aclose()


async def test_backup_and_restore_commands_round_trip(settings: Settings, tmp_path: Path) -> None:
    database_url = settings.database_url.get_secret_value()
    redis, _ = await _state(settings, database_url)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "unused:9092", "REDIS_URL": settings.redis_url.get_secret_value(),
           "DATABASE_URL": database_url, "CIPHERSTREAM_REDIS_KEY_PREFIX": settings.redis_key_prefix}
    folder = tmp_path / f"b{uuid.uuid4().hex[:6]}"
    made = subprocess.run([sys.executable, "-m", "services.cli", "backup", "--to", str(folder)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    await redis.delete(f"{settings.redis_key_prefix}profile:C1")
    back = subprocess.run([sys.executable, "-m", "services.cli", "restore", "--from", str(folder)], env=env | {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'restored.db'}"}, capture_output=True, text=True, timeout=60)
    assert back.returncode == 0, back.stderr
    assert "restored 3 Redis keys" in back.stdout
    assert await redis.get(f"{settings.redis_key_prefix}profile:C1") == b"profile-of-C1"
    await redis.aclose()
