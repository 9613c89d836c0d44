"""Workers that start together race to create the SQL tables; none of them may fail for it."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from services.campaigns.store import CampaignStore
from services.models.registry import ModelRegistry


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no tables yet, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    server_url: str = request.getfixturevalue("postgres_url")
    name = f"fresh_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def test_workers_starting_at_once_all_get_the_tables(empty_database_url: str) -> None:
    def start_worker(index: int) -> str:
        if index % 2:
            CampaignStore(empty_database_url).close()
        else:
            ModelRegistry(empty_database_url).close()
        return "started"

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(start_worker, range(16))) == ["started"] * 16
    engine = create_engine(empty_database_url)
    assert {"campaigns", "campaign_changes", "model_versions", "model_deployments"} <= set(inspect(engine).get_table_names())
    engine.dispose()
