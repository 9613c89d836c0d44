"""Backup and restore of the state Cipherstream keeps outside Kafka: Redis keys and SQL tables.

Kafka topics are replicated by the brokers (and mirrored to the second site); what needs a
backup is Redis (profiles, scored features, contact policy, idempotency keys) and the SQL
database (model registry, audit). A backup is one folder:

- `redis.jsonl`: one line per key under the prefix: key, remaining TTL (ms, -1 = none) and the
  value as Redis' own DUMP serialisation (base64), restored with RESTORE ... REPLACE, so every
  data type comes back exact;
- `sql.jsonl`: one line per row: table and column values (bytes base64, times ISO 8601), inserted
  through SQLAlchemy, so a SQLite backup restores into PostgreSQL and back;
- `manifest.json`: when, how many keys and rows, and a SHA-256 of each file, checked on restore.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import Integer, MetaData, create_engine, insert, select, text

from services.core.errors import CipherstreamError

REDIS_FILE, SQL_FILE, MANIFEST_FILE = "redis.jsonl", "sql.jsonl", "manifest.json"
SCAN_BATCH = 1000


class BackupError(CipherstreamError):
    """A backup is incomplete or does not match its manifest."""


@dataclass(frozen=True)
class BackupSummary:
    redis_keys: int
    sql_rows: int
    folder: Path


async def backup_redis(redis: aioredis.Redis, key_prefix: str, path: Path) -> int:
    count = 0
    cursor = 0
    with path.open("w", encoding="utf-8") as out:
        while True:
            cursor, keys = await redis.scan(cursor, match=f"{key_prefix}*", count=SCAN_BATCH)
            if keys:
                # One round trip per SCAN page, not per key.
                pipeline = redis.pipeline(transaction=False)
                for key in keys:
                    pipeline.dump(key)
                    pipeline.pttl(key)
                replies = await pipeline.execute()
                for key, dumped, ttl_ms in zip(keys, replies[::2], replies[1::2]):
                    if dumped is None:  # expired between SCAN and DUMP
                        continue
                    out.write(json.dumps({"key": base64.b64encode(key).decode(), "ttl_ms": ttl_ms,
                                          "dump": base64.b64encode(dumped).decode()}) + "\n")
                    count += 1
            if cursor == 0:
                return count


async def restore_redis(redis: aioredis.Redis, path: Path) -> int:
    count = 0
    pipeline = redis.pipeline(transaction=False)
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        ttl_ms = entry["ttl_ms"] if entry["ttl_ms"] > 0 else 0
        pipeline.restore(base64.b64decode(entry["key"]), ttl_ms, base64.b64decode(entry["dump"]), replace=True)
        count += 1
        if count % SCAN_BATCH == 0:
            await pipeline.execute()
    await pipeline.execute()
    return count


def _encode_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()}
    if isinstance(value, dt.datetime):
        return {"iso": value.isoformat()}
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict) and "b64" in value:
        return base64.b64decode(value["b64"])
    if isinstance(value, dict) and "iso" in value:
        return dt.datetime.fromisoformat(value["iso"])
    return value


def backup_sql(database_url: str, path: Path) -> int:
    engine = create_engine(database_url)
    metadata = MetaData()
    metadata.reflect(engine)
    count = 0
    with engine.connect() as connection, path.open("w", encoding="utf-8") as out:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)).mappings():
                out.write(json.dumps({"table": table.name, "row": {column: _encode_value(value) for column, value in row.items()}}) + "\n")
                count += 1
    engine.dispose()
    return count


def restore_sql(database_url: str, path: Path, metadata: MetaData) -> int:
    """Insert the backed-up rows into a database whose schema `metadata` creates (if missing)."""
    engine = create_engine(database_url)
    metadata.create_all(engine)
    tables = {table.name: table for table in metadata.sorted_tables}
    rows_by_table: dict[str, list[dict[str, Any]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry["table"] not in tables:
            raise BackupError(f"backup has table {entry['table']!r} that this version does not know")
        table = tables[entry["table"]]
        rows_by_table.setdefault(table.name, []).append(
            {column: _decode_value(value) for column, value in entry["row"].items()})
    with engine.begin() as connection:
        for table in metadata.sorted_tables:  # parents before children (foreign keys)
            if rows_by_table.get(table.name):
                connection.execute(insert(table), rows_by_table[table.name])
        if engine.dialect.name == "postgresql":
            _advance_sequences(connection, metadata)
    engine.dispose()
    return sum(len(rows) for rows in rows_by_table.values())


def _advance_sequences(connection: Any, metadata: MetaData) -> None:
    """Rows came back with their ids; move each serial sequence past them, or the next insert collides."""
    for table in metadata.sorted_tables:
        for column in table.primary_key.columns:
            serial = column.autoincrement is True or (column.autoincrement == "auto" and len(table.primary_key.columns) == 1)
            if serial and isinstance(column.type, Integer):  # a text key (campaign id) has no sequence
                connection.execute(text(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "  # nosec B608  # names from our own table metadata
                    f"COALESCE((SELECT MAX({column.name}) FROM {table.name}), 0) + 1, false)"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def backup(redis: aioredis.Redis, key_prefix: str, database_url: str, folder: Path) -> BackupSummary:
    folder.mkdir(parents=True, exist_ok=True)
    keys = await backup_redis(redis, key_prefix, folder / REDIS_FILE)
    rows = backup_sql(database_url, folder / SQL_FILE)
    manifest = {"taken_at": dt.datetime.now(dt.UTC).isoformat(), "redis_keys": keys, "sql_rows": rows,
                "key_prefix": key_prefix, "sha256": {name: _sha256(folder / name) for name in (REDIS_FILE, SQL_FILE)}}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return BackupSummary(keys, rows, folder)


async def restore(redis: aioredis.Redis, database_url: str, folder: Path, metadata: MetaData) -> BackupSummary:
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.exists():
        raise BackupError(f"{folder} has no {MANIFEST_FILE}: not a complete backup")
    manifest = json.loads(manifest_path.read_text())
    for name, digest in manifest["sha256"].items():
        if _sha256(folder / name) != digest:
            raise BackupError(f"{name} does not match its checksum in the manifest: the backup is damaged")
    keys = await restore_redis(redis, folder / REDIS_FILE)
    rows = restore_sql(database_url, folder / SQL_FILE, metadata)
    return BackupSummary(keys, rows, folder)


