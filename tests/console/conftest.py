"""The console under test: its own fresh database (SQLite, and PostgreSQL where a test takes
`empty_database_url`), a clock the test moves, users of every role, and after every test the check that no
response body and no log line it produced holds an unmasked phone, national id or card number."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.console.accounts import current_code
from services.console.app import create_app
from services.console.context import ConsoleContext
from services.console.masking import PersonalNumberFilter, find_unmasked, normalised
from services.console.roles import ROLES
from services.core.config import Settings, load_settings
from services.core.kafka import Inbound
from services.core.logs import JsonFormatter
from services.protocol.stream_messages import CustomerIdentity, CustomerProfile, CustomerScores, Offer, OfferResponse, ProductScore

PASSWORD = "correct horse battery staple"
# Personal numbers the seeded data carries: every one must leave the console masked.
NATIONAL_ID = "11010519491231002X"
PHONE = "13812345678"
CARD = "6222021234567890123"
CUSTOMER = "C0000001"


@pytest.fixture
def sqlite_database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'console.db'}"


def console_settings(database_url: str, **overrides: Any) -> Settings:
    """No broker and no Redis: the feed is off and uplift answers 503 (tests/console/test_feed.py has both)."""
    values: dict[str, Any] = {"kafka_bootstrap_servers": "127.0.0.1:9", "redis_url": "redis://127.0.0.1:9/0",
                              "database_url": database_url, "console_feed": False, "console_cookie_secure": False}
    return load_settings(**(values | overrides))


class Clock:
    """Epoch seconds the test moves forward (second-factor steps, lockouts, session expiry)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Seen:
    """Every response body and log line of a test, and the values it revealed on purpose."""

    texts: list[tuple[str, str]] = field(default_factory=list)
    revealed: set[str] = field(default_factory=set)

    def leaks(self) -> list[tuple[str, str]]:
        return [(where, number) for where, text_ in self.texts for number in find_unmasked(text_)
                if normalised(number) not in self.revealed]


class _Collector(logging.Handler):
    def __init__(self, seen: Seen) -> None:
        super().__init__()
        self.seen = seen
        self.setFormatter(JsonFormatter("console"))
        self.addFilter(PersonalNumberFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.texts.append(("log", self.format(record)))


@pytest.fixture(autouse=True)
def personal_numbers_stay_masked() -> Iterator[Seen]:
    """After each console test: no unmasked personal number in what it was sent or logged."""
    seen = Seen()
    collector = _Collector(seen)
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(collector)
    root.setLevel(logging.INFO)
    yield seen
    root.removeHandler(collector)
    root.setLevel(previous_level)
    assert seen.leaks() == [], "unmasked personal numbers left the console"


class Client:
    """A browser-like client of the console: its cookies, its user agent, the CSRF token on every state change."""

    def __init__(self, app: FastAPI, seen: Seen, user_agent: str) -> None:
        self.http = TestClient(app, headers={"user-agent": user_agent}, follow_redirects=False)
        self.seen = seen
        self.user_agent = user_agent

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if method.upper() not in ("GET", "HEAD", "OPTIONS"):
            kwargs["headers"] = {"X-CSRF-Token": self.csrf()} | kwargs.get("headers", {})
        response = self.http.request(method, path, **kwargs)
        self.seen.texts.append((f"{method} {path} -> {response.status_code}", response.text))
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Any:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    def csrf(self) -> str:
        token = self.http.cookies.get("cs_csrf")
        if token is None:
            token = self.http.get("/api/csrf").json()["csrf_token"]
        return str(token)


@dataclass
class User:
    username: str
    password: str
    totp_secret: str


@dataclass
class Console:
    context: ConsoleContext
    app: FastAPI
    seen: Seen
    clock: Clock

    def client(self, user_agent: str = "pytest-console/1") -> Client:
        return Client(self.app, self.seen, user_agent)

    def user(self, username: str, *roles: str, expires_at_s: float | None = None) -> User:
        """A user who has finished the first-login setup (password, greeting, authenticator)."""
        accounts = self.context.accounts
        accounts.create_user(username, PASSWORD, dict.fromkeys(roles, expires_at_s), created_by="test",
                             must_change_password=False)
        secret = accounts.offer_totp(username)
        accounts.finish_setup(username, greeting=f"Hello {username}, the heron flies at dawn", code=self.code(secret),
                              new_password=None)
        return User(username, PASSWORD, secret)

    def code(self, secret: str) -> str:
        """A fresh code: the clock moves one step on, as a user waits for the app's next code."""
        self.clock.advance(30)
        return current_code(secret, self.clock())

    def logged_in(self, user: User, user_agent: str | None = None) -> Client:
        """A client logged in as the user (answering the new-client challenge with a code)."""
        client = self.client(user_agent or f"pytest-{user.username}/1")
        answer = client.post("/api/session", json={"username": user.username, "password": user.password})
        if answer.status_code == 202:
            answer = client.post("/api/session/verify", json={"code": self.code(user.totp_secret)})
        assert answer.status_code == 200, answer.text
        return client

    def seed_customer(self, customer_id: str = CUSTOMER) -> None:
        """A customer as the feed stores one (profile, national id, a score, an offer, a response),
        with personal numbers in the free text too."""
        import asyncio

        now_ms = int(time.time() * 1000)
        view = self.context.customers

        def inbound(message: Any) -> Inbound[Any]:
            return Inbound(message, customer_id.encode(), "t", 0, 0, now_ms, b"")

        profile = CustomerProfile(customer_id, 41, 60, 2_500_000, 12_000_000, ("debit_card",), "affluent", "sms",
                                  "Asia/Shanghai", True, now_ms)
        scores = CustomerScores(f"e-{customer_id}", customer_id, "salary_credit", now_ms, now_ms, "affluent", "sms",
                                "Asia/Shanghai", 41, ("debit_card",), True,
                                (ProductScore("wealth_fund", 0.31, "propensity.wealth_fund@v1", "CS-W-v1", True, ()),))
        offer = Offer(f"o-{customer_id}", customer_id, "walk_campaign", "wealth_fund", "sms",
                      f"Call {PHONE} or pay with card {CARD}", 0.31, 0.5, "propensity.wealth_fund@v1", "CS-W-v1", (),
                      f"e-{customer_id}", "salary_credit", "affluent", "2024-06-01", now_ms, now_ms)
        response = OfferResponse(f"r-{customer_id}", f"o-{customer_id}", f"e-{customer_id}", customer_id, "walk_campaign",
                                 "wealth_fund", "sms", "clicked", now_ms)

        async def feed() -> None:
            await view.feed_profiles([inbound(profile)])
            await view.feed_identities([inbound(CustomerIdentity(customer_id, NATIONAL_ID, now_ms))])
            await view.feed_scores([inbound(scores)])
            await view.feed_offers([inbound(offer)])
            await view.feed_responses([inbound(response)])

        asyncio.run(feed())


def open_console(database_url: str, seen: Seen, **overrides: Any) -> Console:
    clock = Clock()
    context = ConsoleContext.open(console_settings(database_url, **overrides), clock=clock)
    return Console(context, create_app(context), seen, clock)


@pytest.fixture
def console(sqlite_database: str, personal_numbers_stay_masked: Seen) -> Iterator[Console]:
    opened = open_console(sqlite_database, personal_numbers_stay_masked)
    yield opened
    opened.context.close()


@pytest.fixture
def console_anywhere(empty_database_url: str, personal_numbers_stay_masked: Seen) -> Iterator[Console]:
    """The console on SQLite and on PostgreSQL."""
    opened = open_console(empty_database_url, personal_numbers_stay_masked)
    yield opened
    opened.context.close()


ALL_ROLES = ROLES
