"""One SQL schema for everything Cipherstream keeps in its database (model registry, campaigns),
so a backup and a restore cover every table at once. SQLite by default, PostgreSQL in production
(DATABASE_URL); tables are created on first use."""
from __future__ import annotations

import importlib

from sqlalchemy import MetaData
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
