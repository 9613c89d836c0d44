"""Every module that declares SQL tables: what a backup and a restore must cover.

Kept above the services (like the CLI) because it names them; core/sql.py knows none of them.
"""
from __future__ import annotations

from sqlalchemy import MetaData

from services.core.sql import full_metadata

TABLE_MODULES = (
    "services.models.registry", "services.campaigns.store", "services.console.accounts", "services.console.sessions",
    "services.console.audit", "services.console.customers",
)


def every_table() -> MetaData:
    return full_metadata(TABLE_MODULES)
