"""What the command line asks of the console: the first admin, an unlock, the audit chain's check.

Each opens the console's database (DATABASE_URL), does one thing, writes it to the audit log as
the operating-system user who ran it (`cli:<user>`), and closes the database again.
"""
from __future__ import annotations

import contextlib
import getpass
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import create_engine

from services.console.accounts import AccountError, Accounts
from services.console.audit import AuditLog, ChainReport
from services.core.config import Settings
from services.core.runtime import ensure_sqlite_directory


@dataclass
class _Stores:
    accounts: Accounts
    audit: AuditLog
    actor: str


@contextlib.contextmanager
def _stores(settings: Settings) -> Iterator[_Stores]:
    database_url = settings.database_url.get_secret_value()
    ensure_sqlite_directory(database_url)
    engine = create_engine(database_url, pool_pre_ping=True)
    try:
        yield _Stores(Accounts(engine, settings), AuditLog(engine), f"cli:{getpass.getuser()}")
    finally:
        engine.dispose()


def create_admin(settings: Settings, username: str, password: str) -> None:
    """The first admin (no account exists by default). Refused once an active admin exists: further
    users, admins included, are made in the console by an admin. The greeting and the second
    factor are set at the first login."""
    with _stores(settings) as stores:
        if stores.accounts.admin_exists():
            stores.audit.append(actor=stores.actor, action="user.created", target=f"user:{username}", outcome="denied",
                                address="local", detail={"reason": "an admin exists"})
            raise AccountError("an admin exists already: create further users in the console (Users page)")
        stores.accounts.create_user(username, password, {"admin": None}, created_by=stores.actor, must_change_password=False)
        stores.audit.append(actor=stores.actor, action="user.created", target=f"user:{username}", address="local",
                            detail={"roles": ["admin"], "first_admin": True})


def unlock(settings: Settings, username: str) -> None:
    """Lift a lockout now (as an admin can in the console)."""
    with _stores(settings) as stores:
        stores.accounts.unlock(username)
        stores.audit.append(actor=stores.actor, action="account.unlocked", target=f"user:{username}", address="local")


def verify_audit(settings: Settings, head: tuple[int, str] | None = None) -> ChainReport:
    """Walk the audit log's hash chain; `head`: the last (sequence, hash) recorded elsewhere."""
    with _stores(settings) as stores:
        report = stores.audit.verify(head)
        stores.audit.append(actor=stores.actor, action="audit.verified", address="local",
                            outcome="ok" if report.intact else "failed",
                            detail={"entries": report.entries, "problems": len(report.problems)})
        return report
