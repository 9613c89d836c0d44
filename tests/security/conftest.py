"""The running console the attack tests hit (one per module, on SQLite; the injection tests also on
PostgreSQL), its Valkey, and the scan after every test: nothing the console wrote during it, no
response body and no log line, holds an unmasked phone, national id or card number."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from services.core.config import Settings, load_settings
from services.core.embedded.processes import ManagedProcess, free_port
from services.core.embedded.redis import start_redis
from tests.security.console_server import RunningConsole, running_console


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The console's Redis (dispatch's uplift sets): a Valkey of the session, no broker needed."""
    managed: ManagedProcess
    managed, url = start_redis(tmp_path_factory.mktemp("valkey"))
    yield url
    managed.stop()


def console_settings(database_url: str, redis_url: str, data_dir: Path) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    return load_settings(
        kafka_bootstrap_servers="127.0.0.1:9", redis_url=redis_url, database_url=database_url, topic_prefix=prefix,
        redis_key_prefix=prefix, data_dir=data_dir, web_port=free_port(),
        console_feed=False,  # the customer view is filled by the tests, not by a broker
        console_cookie_secure=False,  # plain http on loopback: a Secure cookie would never come back
    )


@pytest.fixture(scope="module")
def console(valkey: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningConsole]:
    data_dir = tmp_path_factory.mktemp("console")
    settings = console_settings(f"sqlite:///{data_dir / 'console.db'}", valkey, data_dir)
    with running_console(settings, settings.web_port) as running:
        yield running


@pytest.fixture(scope="module")
def console_on_postgresql(valkey: str, postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningConsole]:
    """The same console on production's engine (a fresh database of the session's PostgreSQL)."""
    data_dir = tmp_path_factory.mktemp("console-pg")
    with fresh_database(postgres_url) as database_url:
        settings = console_settings(database_url, valkey, data_dir)
        with running_console(settings, settings.web_port) as running:
            yield running


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A database of its own on the PostgreSQL server, so the attack tests see only their own rows."""
    name = f"attacks_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(autouse=True)
def no_unmasked_personal_number_written(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, scan what the console wrote during it (bodies and log lines)."""
    consoles = [request.getfixturevalue(name) for name in request.fixturenames
                if name.startswith("console") and isinstance(request.getfixturevalue(name), RunningConsole)]
    starts = [len(console.recorder.written) for console in consoles]
    yield
    leaks = [leak for console, start in zip(consoles, starts) for leak in console.unmasked_since(start)]
    assert leaks == [], f"unmasked personal numbers written by the console: {leaks[:5]}"
