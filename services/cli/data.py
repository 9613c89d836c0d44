"""`cipherstream generate | backup | restore`: synthetic input, and the state kept in Redis and SQL."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer

from services.cli.output import console
from services.core.config import Settings, load_settings

if TYPE_CHECKING:
    import redis.asyncio as aioredis

Done = TypeVar("Done")
# The people `generate` sends by default; `up` trains from their generated history (stack.py).
GENERATED_CUSTOMERS, GENERATED_SEED = 1000, 7


def generate(
    customers: int = typer.Option(GENERATED_CUSTOMERS), events: int = typer.Option(3000),
    seed: int = typer.Option(GENERATED_SEED),
) -> None:
    """Publish synthetic customers and events to bank.events.raw on KAFKA_BOOTSTRAP_SERVERS."""
    from demo.generator.publish import publish_synthetic

    published = asyncio.run(publish_synthetic(load_settings(), customers, events, seed))
    console.print(f"published {published.bank_records} records to {published.bank_topic} "
                  f"and {published.partner_records} to {published.partner_topic}")


def backup(to: Path = typer.Option(..., "--to", help="folder to write the backup into")) -> None:
    """Back up Redis keys under the prefix and every SQL table (REDIS_URL, DATABASE_URL)."""
    from services.core.backup import backup as take_backup

    summary, seconds = asyncio.run(_timed_with_redis(lambda redis, settings: take_backup(
        redis, settings.redis_key_prefix, settings.database_url.get_secret_value(), to)))
    console.print(f"backed up {summary.redis_keys} Redis keys and {summary.sql_rows} SQL rows to {to} in {seconds:.2f} s")


def restore(from_: Path = typer.Option(..., "--from", help="folder of a backup")) -> None:
    """Restore a backup: Redis keys (with their TTLs) and SQL rows; refuses a damaged backup."""
    from services.core.backup import restore as restore_backup
    from services.tables import every_table

    summary, seconds = asyncio.run(_timed_with_redis(lambda redis, settings: restore_backup(
        redis, settings.database_url.get_secret_value(), from_, every_table())))
    console.print(f"restored {summary.redis_keys} Redis keys and {summary.sql_rows} SQL rows in {seconds:.2f} s")


async def _timed_with_redis(action: Callable[[aioredis.Redis, Settings], Awaitable[Done]]) -> tuple[Done, float]:
    """What `action` returned with REDIS_URL's client, and the seconds it took; the client is closed after."""
    import redis.asyncio as aioredis

    settings = load_settings()
    client = aioredis.from_url(settings.redis_url.get_secret_value())
    started = time.perf_counter()
    try:
        return await action(client, settings), time.perf_counter() - started
    finally:
        await client.aclose()
