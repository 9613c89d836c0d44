"""One SQL schema for everything Cipherstream keeps in its database (model registry, campaigns),
so a backup and a restore cover every table at once. SQLite by default, PostgreSQL in production
(DATABASE_URL); tables are created on first use."""
from __future__ import annotations

import importlib
import time
from collections.abc import Sequence

from sqlalchemy import MetaData, Table
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import DeclarativeBase

# Modules that declare tables on `Base`; importing them registers their tables on the metadata.
TABLE_MODULES = ("services.models.registry", "services.dispatch.campaign_store")


class Base(DeclarativeBase):
    pass


def full_metadata() -> MetaData:
    """The metadata with every table of every module (what backup and restore must cover)."""
    for module in TABLE_MODULES:
        importlib.import_module(module)
    return Base.metadata


def ensure_tables(engine: Engine, tables: Sequence[Table] | None = None, attempts: int = 5) -> None:
    """Create the tables that are missing. Several workers starting at once race to create them
    (SQLite: "table ... already exists"; PostgreSQL: a duplicate in pg_type): the loser looks again
    and finds them made."""
    for attempt in range(attempts):
        try:
            Base.metadata.create_all(engine, tables=tables)
            return
        except DatabaseError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
