"""Console sessions: server-side, bound to the client, expiring, each with its own CSRF token.

The browser holds a random token in an HttpOnly, SameSite=Strict cookie; the table holds only
its SHA-256, so a copy of the table opens no session. A session is bound to the client that
opened it (a hash of its user agent and address): the same cookie from another client ends the
session. It ends after `console_session_idle_s` without a request, `console_session_max_s` after
login at the latest, at logout, and when the user is disabled or changes their password.
Each session has a CSRF token that every state-changing request must echo (web.py).

A session opened by a first login is in `setup`: until the user has replaced the one-time
password, set a greeting and enrolled the second factor it reaches nothing else.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Float, String, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from services.console.accounts import token_hash
from services.core.config import Settings
from services.core.sql import Base, ensure_tables

State = Literal["setup", "active"]


class SessionRow(Base):
    __tablename__ = "console_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    client_hash: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(8))
    created_at_s: Mapped[float] = mapped_column(Float)
    last_seen_s: Mapped[float] = mapped_column(Float)
    ended_at_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)


@dataclass(frozen=True)
class SessionInfo:
    token_hash: str
    username: str
    csrf_token: str
    state: State
    created_at_s: float


@dataclass(frozen=True)
class Ended:
    """Why a presented session is no longer valid: `unknown`, `ended`, `expired`, `client_changed`."""

    reason: str
    username: str | None = None


def client_hash(user_agent: str, address: str) -> str:
    """The client a session is bound to.

    >>> client_hash("Mozilla/5.0", "10.0.0.1") == client_hash("Mozilla/5.0", "10.0.0.2")
    False
    """
    return hashlib.sha256(f"{user_agent}\0{address}".encode()).hexdigest()


class Sessions:
    def __init__(self, engine: Engine, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        ensure_tables(self.engine, [Base.metadata.tables[SessionRow.__tablename__]])
        self.settings = settings
        self.clock = clock

    def open(self, username: str, client: str, address: str, state: State) -> tuple[str, SessionInfo]:
        """A new session: the token for the cookie, and the session (with its CSRF token)."""
        token, now = secrets.token_urlsafe(32), self.clock()
        row = SessionRow(token_hash=token_hash(token), username=username, csrf_token=secrets.token_urlsafe(32),
                         client_hash=client, address=address[:64], state=state, created_at_s=now, last_seen_s=now)
        with Session(self.engine) as session, session.begin():
            session.add(row)
            info = _info(row)
        return token, info

    def resolve(self, token: str, client: str) -> SessionInfo | Ended:
        """The live session of this token for this client; a request refreshes its idle timer."""
        now = self.clock()
        with Session(self.engine) as session, session.begin():
            row = session.get(SessionRow, token_hash(token))
            if row is None:
                return Ended("unknown")
            if row.ended_at_s is not None:
                return Ended("ended", row.username)
            reason = None
            if row.client_hash != client:
                reason = "client_changed"
            elif now - row.last_seen_s > self.settings.console_session_idle_s or \
                    now - row.created_at_s > self.settings.console_session_max_s:
                reason = "expired"
            if reason:
                row.ended_at_s, row.end_reason = now, reason
                return Ended(reason, row.username)
            row.last_seen_s = now
            return _info(row)

    def activate(self, token_hash_: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(update(SessionRow).where(SessionRow.token_hash == token_hash_).values(state="active"))

    def end(self, token_hash_: str, reason: str = "logout") -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(update(SessionRow).where(SessionRow.token_hash == token_hash_, SessionRow.ended_at_s.is_(None))
                            .values(ended_at_s=self.clock(), end_reason=reason))

    def end_all_of(self, username: str, reason: str, keep: str | None = None) -> int:
        """End every live session of a user (disabled, password changed), but `keep` (the one asking)."""
        with Session(self.engine) as session, session.begin():
            statement = update(SessionRow).where(SessionRow.username == username, SessionRow.ended_at_s.is_(None))
            if keep is not None:
                statement = statement.where(SessionRow.token_hash != keep)
            return session.execute(statement.values(ended_at_s=self.clock(), end_reason=reason)).rowcount

    def live_count(self, username: str) -> int:
        with Session(self.engine) as session:
            return len(list(session.scalars(select(SessionRow.token_hash).where(
                SessionRow.username == username, SessionRow.ended_at_s.is_(None)))))



def _info(row: SessionRow) -> SessionInfo:
    return SessionInfo(row.token_hash, row.username, row.csrf_token, row.state, row.created_at_s)  # type: ignore[arg-type]
