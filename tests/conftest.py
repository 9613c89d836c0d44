"""Real parts for the suite: one embedded broker and one Redis per session (or the ones named by
KAFKA_BOOTSTRAP_SERVERS / REDIS_URL), fresh topic names and key prefixes per test."""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from services.core.avro import AvroCodec, SchemaStore
from services.core.config import REPO_ROOT, Settings, load_settings
from services.core.embedded.processes import free_port
from services.core.kafka import create_topics
from services.core.runtime import embedded_stack
from services.core.supervisor import ServiceRunner
from services.protocol.catalog import all_topic_names

SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "fate"


# Tests that start whole services or the deployment tooling: `make test-fast` leaves them out.
SYSTEM_TEST_DIRS = frozenset({"e2e", "faults", "ops", "deploy"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.relative_to(REPO_ROOT).parts
        if len(parts) > 2 and parts[0] == "tests" and parts[1] in SYSTEM_TEST_DIRS:
            item.add_marker(pytest.mark.system)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    work_dir = tmp_path_factory.mktemp("stack")
    with embedded_stack(work_dir) as started:
        env = {key: os.environ[key] for key in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "CIPHERSTREAM_EXACTLY_ONCE")
               if os.environ.get(key)}
        env.update(started.env)
        # The tools the tests read and write with (services.core.clients) follow the broker's abilities too.
        os.environ.update({key: value for key, value in started.env.items() if key.startswith("CIPHERSTREAM_")})
        yield env


@pytest.fixture
def settings(stack: dict[str, str], tmp_path: Path) -> Settings:
    """Settings for one test: its own topic prefix, Redis key prefix and data directory."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    return load_settings(
        kafka_bootstrap_servers=stack["KAFKA_BOOTSTRAP_SERVERS"], redis_url=stack["REDIS_URL"],
        database_url=f"sqlite:///{tmp_path / 'cipherstream.db'}", topic_prefix=prefix,
        redis_key_prefix=f"{prefix}", data_dir=tmp_path / "data", web_port=free_port(), topic_partitions=2,
        quiet_hours=False,  # the suite must not depend on the time of day it runs at
        exactly_once=stack.get("CIPHERSTREAM_EXACTLY_ONCE", "true") == "true",
    )


@pytest.fixture
async def topics(settings: Settings) -> list[str]:
    names = all_topic_names(settings)
    await create_topics(settings.kafka_bootstrap_servers, names, settings.topic_partitions)
    return names


@pytest.fixture(scope="session")
def codec() -> AvroCodec:
    return AvroCodec(SchemaStore(REPO_ROOT / "schemas"))


@pytest.fixture
def services(settings: Settings, topics: list[str], tmp_path: Path) -> Iterator[ServiceRunner]:
    runner = ServiceRunner(settings, tmp_path / "logs")
    yield runner
    runner.stop_all()




@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL 16 (the pgserver wheel), or the one DATABASE_URL_POSTGRES names."""
    configured = os.environ.get("DATABASE_URL_POSTGRES")
    if configured:
        yield configured
        return
    import pgserver

    # Not under pytest's numbered temp dirs: another pytest run on the machine prunes old ones,
    # which would delete the data directory under a running server.
    data_dir = Path(tempfile.mkdtemp(prefix="cipherstream-pg-"))
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    yield server.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1)
    server.cleanup()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each SQL test runs on both the embedded default (SQLite) and production's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no tables yet, on SQLite and on PostgreSQL (a new one on the test server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    server_url: str = request.getfixturevalue("postgres_url")
    name = f"fresh_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)
