"""Console accounts: argon2 password hashes, lockout, second factor, greetings, roles through expiring grants.

- Passwords are stored as argon2id hashes (argon2-cffi's defaults: salted, memory-hard); a hash
  made with weaker parameters is re-hashed at the next good login. There is no default account:
  the first admin is made by `cipherstream console create-admin`, every other user by an admin,
  with a one-time password the user must change at first login.
- Lockout (finding BJKJ-005): `console_lockout_failures` failed logins (bad password or bad
  second-factor code) within `console_lockout_window_s` lock the account for
  `console_lockout_cooldown_s`; an admin may unlock it sooner. A locked account refuses even the
  right password, and says so only as "locked".
- Abnormal logins: a client (user agent and address) the user has not logged in from before, or
  more than `console_login_burst` attempts within `console_login_burst_window_s`, are challenged
  for a TOTP code (RFC 6238, pyotp) from the authenticator app the user enrolled at first login.
  A code is accepted once (the time step is remembered), so a captured code cannot be replayed.
- Every user sets a reserved greeting (anti-phishing) at first login; the console shows it after
  each login, so a look-alike site that does not know it cannot show it.
- Roles come from grants, each with an optional expiry; an expired grant gives nothing.

Times are epoch seconds from an injectable clock, so lockout and expiry are tested without waiting.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import argon2
import pyotp
from sqlalchemy import Boolean, Float, Integer, String, Text, UniqueConstraint, delete, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from services.console.audit import printable
from services.console.masking import mask_personal_numbers
from services.console.roles import ROLES, permissions_of
from services.core.config import Settings
from services.core.sql import Base, ensure_tables

USERNAME = re.compile(r"^[a-z][a-z0-9._-]{2,63}$")
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256
MAX_GREETING_LENGTH = 100
TOTP_STEP_S = 30
CHALLENGE_TTL_S = 300.0
ISSUER = "Cipherstream console"

_hasher = argon2.PasswordHasher()
# Verified against when the username does not exist, so an unknown name costs the same time as a known one.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class UserRow(Base):
    __tablename__ = "console_users"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    greeting: Mapped[str | None] = mapped_column(String(MAX_GREETING_LENGTH), nullable=True)
    totp_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)
    totp_pending: Mapped[str | None] = mapped_column(String(64), nullable=True)  # offered at setup, not yet confirmed
    totp_last_step: Mapped[int] = mapped_column(Integer, default=0)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    locked_until_s: Mapped[float] = mapped_column(Float, default=0.0)
    failures_since_s: Mapped[float] = mapped_column(Float, default=0.0)  # failures before this do not count
    created_at_s: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(64))


class GrantRow(Base):
    __tablename__ = "console_role_grants"
    __table_args__ = (UniqueConstraint("username", "role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(32))
    granted_by: Mapped[str] = mapped_column(String(64))
    granted_at_s: Mapped[float] = mapped_column(Float)
    expires_at_s: Mapped[float | None] = mapped_column(Float, nullable=True)


class LoginAttemptRow(Base):
    __tablename__ = "console_login_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(128), index=True)
    address: Mapped[str] = mapped_column(String(64))
    at_s: Mapped[float] = mapped_column(Float, index=True)
    outcome: Mapped[str] = mapped_column(String(16))


class KnownClientRow(Base):
    __tablename__ = "console_known_clients"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_seen_s: Mapped[float] = mapped_column(Float)
    last_seen_s: Mapped[float] = mapped_column(Float)


class ChallengeRow(Base):
    __tablename__ = "console_login_challenges"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    client_hash: Mapped[str] = mapped_column(String(64))
    created_at_s: Mapped[float] = mapped_column(Float)
    reasons: Mapped[str] = mapped_column(Text)


TABLES = (UserRow, GrantRow, LoginAttemptRow, KnownClientRow, ChallengeRow)
LoginStatus = Literal["ok", "wrong", "locked", "disabled"]
FAILED_OUTCOMES = ("bad_password", "bad_code")


@dataclass(frozen=True)
class Grant:
    role: str
    granted_by: str
    expires_at_s: float | None


@dataclass(frozen=True)
class User:
    username: str
    greeting: str | None
    needs_setup: bool  # a new password, a greeting or the second factor are still to be set
    must_change_password: bool
    has_second_factor: bool
    disabled: bool
    locked_until_s: float
    grants: tuple[Grant, ...]
    created_at_s: float
    created_by: str

    def roles_at(self, now_s: float) -> tuple[str, ...]:
        return tuple(grant.role for grant in self.grants if grant.expires_at_s is None or grant.expires_at_s > now_s)


@dataclass(frozen=True)
class LoginResult:
    status: LoginStatus
    user: User | None = None
    locked_now: bool = False  # this failure locked the account


class AccountError(ValueError):
    """A request the account rules refuse; the message names the field and says why."""


def token_hash(token: str) -> str:
    """Tokens (sessions, challenges) are stored hashed: a copy of the table opens no session."""
    return hashlib.sha256(token.encode()).hexdigest()


def password_problem(username: str, password: str) -> str | None:
    """Why a new password is refused, or None. Length over composition rules (NIST SP 800-63B).

    >>> password_problem("alice", "short"), password_problem("alice", "my alice password"), password_problem("alice", "correct horse battery")
    ('password: at least 12 characters', 'password: must not contain the username', None)
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"password: at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"password: at most {MAX_PASSWORD_LENGTH} characters"
    if username.lower() in password.lower():
        return "password: must not contain the username"
    return None


def clean_greeting(greeting: str) -> str:
    """The greeting as stored: trimmed, printable, 1 to 100 characters, no personal number in clear.

    >>> clean_greeting("  Blue heron at dawn  ")
    'Blue heron at dawn'
    """
    cleaned = "".join(character for character in greeting.strip() if character.isprintable())
    if not cleaned or len(cleaned) > MAX_GREETING_LENGTH:
        raise AccountError(f"greeting: 1 to {MAX_GREETING_LENGTH} printable characters")
    return mask_personal_numbers(cleaned)


class Accounts:
    def __init__(self, engine: Engine, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        ensure_tables(self.engine, [Base.metadata.tables[table.__tablename__] for table in TABLES])
        self.settings = settings
        self.clock = clock

    # --- users and grants -------------------------------------------------------------------
    def create_user(self, username: str, password: str, roles: dict[str, float | None], created_by: str,
                    must_change_password: bool = True) -> User:
        """A new user with an initial password and roles (role -> expiry in epoch seconds, or None)."""
        if not USERNAME.match(username):
            raise AccountError("username: 3 to 64 of a-z 0-9 . _ -, starting with a letter")
        problem = password_problem(username, password)
        if problem:
            raise AccountError(problem)
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise AccountError(f"roles: unknown {sorted(unknown)}; known: {', '.join(ROLES)}")
        now = self.clock()
        with Session(self.engine) as session, session.begin():
            if session.get(UserRow, username) is not None:
                raise AccountError(f"username: {username!r} exists")
            session.add(UserRow(username=username, password_hash=_hasher.hash(password), must_change_password=must_change_password,
                                disabled=False, locked_until_s=0.0, failures_since_s=0.0, totp_last_step=0,
                                created_at_s=now, created_by=created_by))
            for role, expires_at_s in roles.items():
                session.add(GrantRow(username=username, role=role, granted_by=created_by, granted_at_s=now,
                                     expires_at_s=expires_at_s))
        return self.user(username)  # type: ignore[return-value]

    def user(self, username: str) -> User | None:
        with Session(self.engine) as session:
            row = session.get(UserRow, username)
            if row is None:
                return None
            grants = session.scalars(select(GrantRow).where(GrantRow.username == username).order_by(GrantRow.role))
            return _user(row, tuple(Grant(g.role, g.granted_by, g.expires_at_s) for g in grants))

    def users(self) -> list[User]:
        with Session(self.engine) as session:
            grants: dict[str, list[Grant]] = {}
            for grant in session.scalars(select(GrantRow).order_by(GrantRow.role)):
                grants.setdefault(grant.username, []).append(Grant(grant.role, grant.granted_by, grant.expires_at_s))
            return [_user(row, tuple(grants.get(row.username, ())))
                    for row in session.scalars(select(UserRow).order_by(UserRow.username))]

    def permissions(self, username: str) -> tuple[tuple[str, ...], frozenset[str]]:
        """The user's roles whose grant has not expired, and the permissions they give."""
        user = self.user(username)
        if user is None or user.disabled:
            return (), frozenset()
        roles = user.roles_at(self.clock())
        return roles, permissions_of(roles)

    def admin_exists(self) -> bool:
        now = self.clock()
        with Session(self.engine) as session:
            return session.scalar(
                select(func.count()).select_from(GrantRow).join(UserRow, UserRow.username == GrantRow.username)
                .where(GrantRow.role == "admin", UserRow.disabled.is_(False))
                .where((GrantRow.expires_at_s.is_(None)) | (GrantRow.expires_at_s > now))) > 0

    def grant(self, username: str, role: str, granted_by: str, expires_at_s: float | None) -> None:
        if role not in ROLES:
            raise AccountError(f"role: unknown {role!r}; known: {', '.join(ROLES)}")
        if expires_at_s is not None and expires_at_s <= self.clock():
            raise AccountError("expires_at: must be in the future")
        with Session(self.engine) as session, session.begin():
            self._existing(session, username)
            row = session.scalar(select(GrantRow).where(GrantRow.username == username, GrantRow.role == role))
            if row is None:
                session.add(GrantRow(username=username, role=role, granted_by=granted_by, granted_at_s=self.clock(),
                                     expires_at_s=expires_at_s))
            else:
                row.granted_by, row.granted_at_s, row.expires_at_s = granted_by, self.clock(), expires_at_s

    def revoke(self, username: str, role: str) -> bool:
        with Session(self.engine) as session, session.begin():
            self._existing(session, username)
            return session.execute(delete(GrantRow).where(GrantRow.username == username, GrantRow.role == role)).rowcount > 0

    def unlock(self, username: str) -> None:
        """Lift a lock now; the failures before it no longer count."""
        with Session(self.engine) as session, session.begin():
            row = self._existing(session, username)
            row.locked_until_s, row.failures_since_s = 0.0, self.clock()

    def set_disabled(self, username: str, disabled: bool) -> None:
        with Session(self.engine) as session, session.begin():
            self._existing(session, username).disabled = disabled

    # --- logging in ---------------------------------------------------------------------------
    def authenticate(self, username: str, password: str, address: str) -> LoginResult:
        """Check a password, counting failures towards the lock. The outcome of each try is recorded."""
        now = self.clock()
        with Session(self.engine) as session, session.begin():
            row = session.get(UserRow, username, with_for_update=True) if USERNAME.match(username) else None
            if row is None:
                _verify(_DUMMY_HASH, password)
                self._attempt(session, printable(username, 128), address, now, "unknown_user")
                return LoginResult("wrong")
            if row.locked_until_s > now:
                self._attempt(session, username, address, now, "locked")
                return LoginResult("locked")
            if not _verify(row.password_hash, password):
                locked_now = self._fail(session, row, address, now, "bad_password")
                return LoginResult("locked" if locked_now else "wrong", locked_now=locked_now)
            if row.disabled:
                self._attempt(session, username, address, now, "disabled")
                return LoginResult("disabled")
            if _hasher.check_needs_rehash(row.password_hash):
                row.password_hash = _hasher.hash(password)
            self._attempt(session, username, address, now, "password_ok")
        return LoginResult("ok", self.user(username))

    def check_code(self, username: str, code: str, address: str) -> LoginResult:
        """A second-factor code: right once within +-1 time step; a wrong one counts as a failed login."""
        now = self.clock()
        with Session(self.engine) as session, session.begin():
            row = self._existing(session, username, for_update=True)
            if row.locked_until_s > now:
                self._attempt(session, username, address, now, "locked")
                return LoginResult("locked")
            step = _matching_step(row.totp_secret, code, now, row.totp_last_step) if row.totp_secret else None
            if step is None:
                locked_now = self._fail(session, row, address, now, "bad_code")
                return LoginResult("locked" if locked_now else "wrong", locked_now=locked_now)
            row.totp_last_step = step
            self._attempt(session, username, address, now, "code_ok")
        return LoginResult("ok", self.user(username))

    def succeeded(self, username: str, client_hash: str) -> None:
        """A completed login: earlier failures stop counting and the client becomes known."""
        now = self.clock()
        with Session(self.engine) as session, session.begin():
            self._existing(session, username).failures_since_s = now
            known = session.get(KnownClientRow, (username, client_hash))
            if known is None:
                session.add(KnownClientRow(username=username, client_hash=client_hash, first_seen_s=now, last_seen_s=now))
            else:
                known.last_seen_s = now
            self._attempt(session, username, "", now, "ok")

    def abnormal(self, username: str, client_hash: str) -> list[str]:
        """Why this login should be challenged: `new_client`, `burst`; empty: a usual login."""
        now = self.clock()
        settings = self.settings
        with Session(self.engine) as session:
            reasons = [] if session.get(KnownClientRow, (username, client_hash)) else ["new_client"]
            recent = session.scalar(select(func.count()).select_from(LoginAttemptRow).where(
                LoginAttemptRow.username == username, LoginAttemptRow.at_s > now - settings.console_login_burst_window_s,
                LoginAttemptRow.outcome == "password_ok"))
        if (recent or 0) > settings.console_login_burst:
            reasons.append("burst")
        return reasons

    def open_challenge(self, username: str, client_hash: str, reasons: list[str]) -> str:
        token = secrets.token_urlsafe(32)
        with Session(self.engine) as session, session.begin():
            session.execute(delete(ChallengeRow).where(ChallengeRow.created_at_s < self.clock() - CHALLENGE_TTL_S))
            session.add(ChallengeRow(token_hash=token_hash(token), username=username, client_hash=client_hash,
                                     created_at_s=self.clock(), reasons=json.dumps(reasons)))
        return token

    def challenge(self, token: str, client_hash: str) -> tuple[str, list[str]] | None:
        """The user and reasons of an open challenge from this same client, or None."""
        with Session(self.engine) as session:
            row = session.get(ChallengeRow, token_hash(token))
            if row is None or row.client_hash != client_hash or row.created_at_s < self.clock() - CHALLENGE_TTL_S:
                return None
            return row.username, json.loads(row.reasons)

    def close_challenge(self, token: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(delete(ChallengeRow).where(ChallengeRow.token_hash == token_hash(token)))

    # --- the user's own account -----------------------------------------------------------------
    def offer_totp(self, username: str) -> str:
        """A new TOTP secret for the user to enrol (confirmed by `finish_setup` with a code from it)."""
        secret = pyotp.random_base32()
        with Session(self.engine) as session, session.begin():
            self._existing(session, username).totp_pending = secret
        return secret

    def totp_uri(self, username: str, secret: str) -> str:
        return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)

    def finish_setup(self, username: str, *, greeting: str, code: str, new_password: str | None) -> None:
        """First login: set the greeting, confirm the authenticator (and replace the one-time password)."""
        cleaned = clean_greeting(greeting)
        with Session(self.engine) as session, session.begin():
            row = self._existing(session, username, for_update=True)
            if row.must_change_password:
                if new_password is None:
                    raise AccountError("new_password: the one-time password must be replaced")
                problem = password_problem(username, new_password)
                if problem:
                    raise AccountError(problem)
                if _verify(row.password_hash, new_password):
                    raise AccountError("new_password: must differ from the one-time password")
            if row.totp_secret is None:
                step = _matching_step(row.totp_pending, code, self.clock(), 0) if row.totp_pending else None
                if step is None:
                    raise AccountError("code: does not match the authenticator secret offered")
                row.totp_secret, row.totp_pending, row.totp_last_step = row.totp_pending, None, step
            if row.must_change_password and new_password is not None:
                row.password_hash, row.must_change_password = _hasher.hash(new_password), False
            row.greeting = cleaned

    def set_greeting(self, username: str, greeting: str) -> None:
        cleaned = clean_greeting(greeting)
        with Session(self.engine) as session, session.begin():
            self._existing(session, username).greeting = cleaned

    def change_password(self, username: str, current: str, new: str, address: str) -> LoginResult:
        """Needs the current password (a wrong one counts towards the lock)."""
        problem = password_problem(username, new)
        if problem:
            raise AccountError(problem)
        checked = self.authenticate(username, current, address)
        if checked.status == "ok":
            with Session(self.engine) as session, session.begin():
                self._existing(session, username).password_hash = _hasher.hash(new)
        return checked

    def reset_password(self, username: str) -> str:
        """An admin's reset: a new one-time password (shown to the admin once), to be changed at next login."""
        one_time = secrets.token_urlsafe(12)
        with Session(self.engine) as session, session.begin():
            row = self._existing(session, username)
            row.password_hash, row.must_change_password = _hasher.hash(one_time), True
        return one_time


    # --- internals ----------------------------------------------------------------------------
    def _existing(self, session: Session, username: str, for_update: bool = False) -> UserRow:
        row = session.get(UserRow, username, with_for_update=for_update)
        if row is None:
            raise AccountError(f"username: no user {mask_personal_numbers(username)!r}")
        return row

    def _attempt(self, session: Session, username: str, address: str, now: float, outcome: str) -> None:
        session.add(LoginAttemptRow(username=username, address=printable(address, 64), at_s=now, outcome=outcome))

    def _fail(self, session: Session, row: UserRow, address: str, now: float, outcome: str) -> bool:
        """Record a failure; lock the account when it makes `console_lockout_failures` in the window."""
        self._attempt(session, row.username, address, now, outcome)
        session.flush()
        counted_from = max(now - self.settings.console_lockout_window_s, row.failures_since_s)
        failures = session.scalar(select(func.count()).select_from(LoginAttemptRow).where(
            LoginAttemptRow.username == row.username, LoginAttemptRow.at_s > counted_from,
            LoginAttemptRow.outcome.in_(FAILED_OUTCOMES))) or 0
        if failures >= self.settings.console_lockout_failures:
            row.locked_until_s = now + self.settings.console_lockout_cooldown_s
            row.failures_since_s = row.locked_until_s  # after the cool-down, a fresh count
            return True
        return False


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


def _matching_step(secret: str | None, code: str, now_s: float, last_step: int) -> int | None:
    """The time step (previous, current or next) whose code this is, if later than the last one used."""
    if not secret or not re.fullmatch(r"\d{6}", code or ""):
        return None
    totp = pyotp.TOTP(secret)
    current = int(now_s // TOTP_STEP_S)
    for step in (current - 1, current, current + 1):
        if step > last_step and hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def current_code(secret: str, now_s: float | None = None) -> str:
    """The code an authenticator app shows now for the secret (the tests log in with it).

    >>> len(current_code(pyotp.random_base32()))
    6
    """
    return pyotp.TOTP(secret).generate_otp(int((time.time() if now_s is None else now_s) // TOTP_STEP_S))


def _user(row: UserRow, grants: tuple[Grant, ...]) -> User:
    return User(username=row.username, greeting=row.greeting,
                needs_setup=row.must_change_password or row.greeting is None or row.totp_secret is None,
                must_change_password=row.must_change_password, has_second_factor=row.totp_secret is not None,
                disabled=row.disabled,
                locked_until_s=row.locked_until_s, grants=grants, created_at_s=row.created_at_s,
                created_by=row.created_by)
