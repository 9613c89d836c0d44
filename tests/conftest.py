"""Real parts for the suite: one embedded broker and one Redis per session (or the ones named by
KAFKA_BOOTSTRAP_SERVERS / REDIS_URL), fresh topic names and key prefixes per test."""
from __future__ import annotations

import asyncio
import os
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.core.avro import AvroCodec, SchemaStore
from services.core.config import REPO_ROOT, Settings, load_settings
from services.core.kafka import all_topic_names, create_topics
from services.core.runtime import ManagedProcess, embedded_stack, free_port, start_process

SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "fate"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    work_dir = tmp_path_factory.mktemp("stack")
    with embedded_stack(work_dir) as started:
        env = {key: os.environ[key] for key in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL") if os.environ.get(key)}
        env.update(started.env)
        yield env


@pytest.fixture
def settings(stack: dict[str, str], tmp_path: Path) -> Settings:
    """Settings for one test: its own topic prefix, Redis key prefix and data directory."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    return load_settings(
        kafka_bootstrap_servers=stack["KAFKA_BOOTSTRAP_SERVERS"], redis_url=stack["REDIS_URL"],
        database_url=f"sqlite:///{tmp_path / 'cipherstream.db'}", topic_prefix=prefix,
        redis_key_prefix=f"{prefix}", data_dir=tmp_path / "data", web_port=free_port(), topic_partitions=2,
    )


@pytest.fixture
async def topics(settings: Settings) -> list[str]:
    names = all_topic_names(settings)
    await create_topics(settings.kafka_bootstrap_servers, names, settings.topic_partitions)
    return names


@pytest.fixture(scope="session")
def codec() -> AvroCodec:
    return AvroCodec(SchemaStore(REPO_ROOT / "schemas"))


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a service process exactly these settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CIPHERSTREAM_", "OTEL_"))}
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "REDIS_URL": settings.redis_url.get_secret_value(),
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "CIPHERSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "CIPHERSTREAM_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "CIPHERSTREAM_DATA_DIR": str(settings.data_dir),
        "CIPHERSTREAM_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "CIPHERSTREAM_LOG_LEVEL": "INFO",
    })
    return env


class ServiceRunner:
    """Starts services as real processes (`python -m services.<name>.app`) and stops them."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.running: dict[str, ManagedProcess] = {}

    def start(self, name: str, extra_env: dict[str, str] | None = None, instance: str = "") -> ManagedProcess:
        port = free_port()
        env = settings_env(self.settings) | {"CIPHERSTREAM_WEB_PORT": str(port)} | (extra_env or {})
        managed = start_process(f"{name}{instance}", [sys.executable, "-m", f"services.{name}.app", "worker"],
                                self.log_dir, env)
        self.running[f"{name}{instance}"] = managed
        wait_ready(port, managed)
        return managed

    def stop_all(self) -> None:
        for managed in self.running.values():
            managed.stop()


def wait_ready(port: int, managed: ManagedProcess, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if managed.process.poll() is not None:
            raise RuntimeError(f"{managed.name} exited: {managed.log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{managed.name} not ready in {timeout_s} s: {managed.log_path.read_text()[-3000:]}")


@pytest.fixture
def services(settings: Settings, topics: list[str], tmp_path: Path) -> Iterator[ServiceRunner]:
    runner = ServiceRunner(settings, tmp_path / "logs")
    yield runner
    runner.stop_all()


