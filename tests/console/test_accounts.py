"""Console accounts on SQLite and PostgreSQL: argon2 hashes, the lockout and its cool-down, the
second factor accepted once, abnormal logins, expiring grants, the first-login setup."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine

from services.console.accounts import AccountError, Accounts, UserRow, current_code
from tests.console.conftest import PASSWORD, Clock, console_settings


@pytest.fixture
def engine(empty_database_url: str) -> Iterator[Engine]:
    made = create_engine(empty_database_url)
    yield made
    made.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _accounts(engine: Engine, clock: Clock, **settings: object) -> Accounts:
    return Accounts(engine, console_settings(str(engine.url.render_as_string(hide_password=False)), **settings), clock)


def _enrolled(accounts: Accounts, clock: Clock, username: str = "ana.lyst") -> str:
    accounts.create_user(username, PASSWORD, {"analyst": None}, created_by="test", must_change_password=False)
    secret = accounts.offer_totp(username)
    accounts.finish_setup(username, greeting="Blue heron", code=current_code(secret, clock()), new_password=None)
    return secret


def test_passwords_are_stored_only_as_argon2id_hashes(engine: Engine, clock: Clock) -> None:
    accounts = _accounts(engine, clock)
    accounts.create_user("ana.lyst", PASSWORD, {"analyst": None}, created_by="test")
    with engine.connect() as connection:
        stored = connection.execute(select(UserRow.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert accounts.authenticate("ana.lyst", PASSWORD, "10.0.0.1").status == "ok"
    assert accounts.authenticate("ana.lyst", PASSWORD + "x", "10.0.0.1").status == "wrong"
    with pytest.raises(AccountError, match="password: at least 12"):
        accounts.create_user("bob.lyst", "short", {"analyst": None}, created_by="test")


def test_five_failures_within_the_window_lock_the_account_until_the_cool_down(engine: Engine, clock: Clock) -> None:
    accounts = _accounts(engine, clock)
    accounts.create_user("ana.lyst", PASSWORD, {"analyst": None}, created_by="test")
    for attempt in range(4):
        clock.advance(60)
        assert accounts.authenticate("ana.lyst", f"wrong {attempt}", "10.0.0.1").status == "wrong"
    fifth = accounts.authenticate("ana.lyst", "wrong again", "10.0.0.1")
    assert (fifth.status, fifth.locked_now) == ("locked", True)
    assert accounts.authenticate("ana.lyst", PASSWORD, "10.0.0.1").status == "locked"  # even the right password
    clock.advance(899)
    assert accounts.authenticate("ana.lyst", PASSWORD, "10.0.0.1").status == "locked"
    clock.advance(2)
    assert accounts.authenticate("ana.lyst", PASSWORD, "10.0.0.1").status == "ok"
    # After the cool-down the count starts again: one more failure does not lock.
    assert accounts.authenticate("ana.lyst", "wrong", "10.0.0.1").status == "wrong"


def test_failures_spread_wider_than_the_window_do_not_lock(engine: Engine, clock: Clock) -> None:
    accounts = _accounts(engine, clock)
    accounts.create_user("ana.lyst", PASSWORD, {"analyst": None}, created_by="test")
    for _ in range(4):
        assert accounts.authenticate("ana.lyst", "wrong", "10.0.0.1").status == "wrong"
    clock.advance(901)
    assert accounts.authenticate("ana.lyst", "wrong", "10.0.0.1").status == "wrong"


def test_the_thresholds_are_settings_and_an_admin_unlock_clears_the_count(engine: Engine, clock: Clock) -> None:
    accounts = _accounts(engine, clock, console_lockout_failures=2, console_lockout_cooldown_s=3600)
    accounts.create_user("ana.lyst", PASSWORD, {"analyst": None}, created_by="test")
    accounts.authenticate("ana.lyst", "wrong", "10.0.0.1")
    assert accounts.authenticate("ana.lyst", "wrong", "10.0.0.1").locked_now
    accounts.unlock("ana.lyst")
    assert accounts.authenticate("ana.lyst", "wrong", "10.0.0.1").status == "wrong"  # the old failures no longer count
    assert accounts.authenticate("ana.lyst", PASSWORD, "10.0.0.1").status == "ok"


def test_wrong_codes_count_towards_the_lock_and_a_code_is_accepted_once(engine: Engine, clock: Clock) -> None:
    accounts = _accounts(engine, clock)
    secret = _enrolled(accounts, clock)
    clock.advance(30)
    code = current_code(secret, clock())
    assert accounts.check_code("ana.lyst", code, "10.0.0.1").status == "ok"
    assert accounts.check_code("ana.lyst", code, "10.0.0.1").status == "wrong"  # a captured code cannot be replayed
    for _ in range(3):
        assert accounts.check_code("ana.lyst", "000000", "10.0.0.1").status == "wrong"
    assert accounts.check_code("ana.lyst", "123456", "10.0.0.1").locked_now  # the fifth failure, passwords or codes


def test_a_new_client_or_a_burst_of_logins_is_abnormal(engine: Engine, clock: Clock) -> None:
    accounts = _accounts(engine, clock, console_login_burst=3)
    _enrolled(accounts, clock)
    assert accounts.abnormal("ana.lyst", "client-a") == ["new_client"]
    accounts.succeeded("ana.lyst", "client-a")
    for _ in range(3):
        accounts.authenticate("ana.lyst", PASSWORD, "10.0.0.1")
    assert accounts.abnormal("ana.lyst", "client-a") == []
    accounts.authenticate("ana.lyst", PASSWORD, "10.0.0.1")
    assert accounts.abnormal("ana.lyst", "client-a") == ["burst"]
    clock.advance(61)
    assert accounts.abnormal("ana.lyst", "client-a") == []


def test_roles_come_from_grants_that_expire(engine: Engine, clock: Clock) -> None:
    accounts = _accounts(engine, clock)
    accounts.create_user("ana.lyst", PASSWORD, {"analyst": clock() + 60, "sre": None}, created_by="test")
    roles, permissions = accounts.permissions("ana.lyst")
    assert set(roles) == {"analyst", "sre"} and "customers.read" in permissions
    clock.advance(61)
    roles, permissions = accounts.permissions("ana.lyst")
    assert roles == ("sre",) and "customers.read" not in permissions
    with pytest.raises(AccountError, match="expires_at"):
        accounts.grant("ana.lyst", "analyst", "admin", clock() - 1)
    accounts.set_disabled("ana.lyst", True)
    assert accounts.permissions("ana.lyst") == ((), frozenset())


def test_first_login_sets_a_new_password_a_greeting_and_the_second_factor(engine: Engine, clock: Clock) -> None:
    accounts = _accounts(engine, clock)
    accounts.create_user("new.user", "one-time-pass-123", {"marketer": None}, created_by="admin")
    assert accounts.user("new.user").needs_setup  # type: ignore[union-attr]
    secret = accounts.offer_totp("new.user")
    code = current_code(secret, clock())
    with pytest.raises(AccountError, match="new_password"):
        accounts.finish_setup("new.user", greeting="Blue heron", code=code, new_password=None)
    with pytest.raises(AccountError, match="code"):
        accounts.finish_setup("new.user", greeting="Blue heron", code="000000", new_password=PASSWORD)
    with pytest.raises(AccountError, match="greeting"):
        accounts.finish_setup("new.user", greeting="   ", code=code, new_password=PASSWORD)
    accounts.finish_setup("new.user", greeting="  Blue heron  ", code=code, new_password=PASSWORD)
    user = accounts.user("new.user")
    assert user is not None and not user.needs_setup and user.greeting == "Blue heron" and user.has_second_factor
    assert accounts.authenticate("new.user", "one-time-pass-123", "10.0.0.1").status == "wrong"
    assert accounts.authenticate("new.user", PASSWORD, "10.0.0.1").status == "ok"
