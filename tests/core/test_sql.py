"""Workers that start together race to create the SQL tables; none of them may fail for it."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import create_engine, inspect

from services.campaigns.store import CampaignStore
from services.models.registry import ModelRegistry


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
