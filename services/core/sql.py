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


class Base(DeclarativeBase):
    pass


def full_metadata(table_modules: Sequence[str]) -> MetaData:
    """The metadata with every table the named modules declare on `Base` (importing a module
    registers its tables); services/tables.py names them all for backup and restore."""
    for module in table_modules:
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
