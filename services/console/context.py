"""What the console is built from: made once at start-up (app.py) and passed in, never global."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from services.campaigns.catalog import CampaignCatalog
from services.campaigns.store import CampaignStore
from services.console.accounts import Accounts
from services.console.audit import AuditLog
from services.console.customers import CustomerView
from services.console.sessions import Sessions
from services.core.config import Settings
from services.models.registry import ModelRegistry


@dataclass
class ConsoleContext:
    settings: Settings
    engine: Engine
    accounts: Accounts
    sessions: Sessions
    audit: AuditLog
    customers: CustomerView
    campaigns: CampaignCatalog
    registry: ModelRegistry
    redis: Any = None  # dispatch's Redis, for the uplift sets; None: uplift unavailable
    runner: Any = None  # the feed's StageRunner while it runs

    @classmethod
    def open(cls, settings: Settings, clock: Callable[[], float] = time.time) -> ConsoleContext:
        """Every store on one engine (SQLite file or PostgreSQL), tables and triggers made if missing.
        `clock` (epoch seconds) drives lockouts, sessions and second-factor steps."""
        database_url = settings.database_url.get_secret_value()
        engine = create_engine(database_url, pool_pre_ping=True)
        audit = AuditLog(engine)
        return cls(settings=settings, engine=engine, accounts=Accounts(engine, settings, clock),
                   sessions=Sessions(engine, settings, clock),
                   audit=audit, customers=CustomerView(engine, audit, settings.console_customer_history),
                   campaigns=CampaignCatalog(settings.campaigns_file, CampaignStore(database_url)),
                   registry=ModelRegistry(database_url))

    def close(self) -> None:
        self.campaigns.store.close()
        self.registry.close()
        self.engine.dispose()
