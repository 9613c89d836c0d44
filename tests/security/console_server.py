"""The console as an attacker meets it: under uvicorn on a real port, on a real SQL database, with
every response body it sends and every log line it writes recorded for the personal-number scan.

`RunningConsole` starts `services.console.app.create_app` in a thread of the test process (so its
log records reach our handler, formatted and masked as the service's stdout handler does them),
wrapped in `RecordingApp`, which keeps a copy of each response body as it leaves the console.
`Operator` is one logged-in user per role, through the real login, first-login setup (new
password, greeting, TOTP enrolment) and CSRF token, as a browser would.
"""
from __future__ import annotations

import asyncio
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyotp
import requests
import uvicorn

from services.console.app import create_app
from services.console.audit import AuditEntry, AuditQuery
from services.console.context import ConsoleContext
from services.console.masking import PersonalNumberFilter, find_unmasked
from services.console.web import CSRF_COOKIE, CSRF_HEADER
from services.core.config import Settings
from services.core.logs import JsonFormatter
from services.core.waiting import wait_until

USER_AGENT = "cipherstream-attack-tests/1"
_REVEAL = re.compile(r"^POST /(?:api/)?customers/([^/]+)/reveal -> 200$")
PASSWORD_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


@dataclass(frozen=True)
class Recorded:
    """One thing the console wrote: a response body (`where` is the method, path and status) or a log line."""

    where: str
    text: str


@dataclass
class Recorder:
    written: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, where: str, text: str) -> None:
        with self.lock:
            self.written.append(Recorded(where, text))

    def since(self, start: int) -> list[Recorded]:
        with self.lock:
            return self.written[start:]

    def unmasked(self, start: int = 0, allowed: Callable[[Recorded], set[str]] = lambda item: set()) -> list[tuple[str, list[str]]]:
        """Every recorded body or log line from `start` on with an unmasked phone, id or card number
        (but the ones `allowed` names for that item)."""
        return [(item.where, found) for item in self.since(start)
                if (found := [number for number in find_unmasked(item.text) if number not in allowed(item)])]


class RecordingApp:
    """ASGI wrapper keeping every response body the console sends (after its own masking)."""

    def __init__(self, app: Any, recorder: Recorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        chunks: list[bytes] = []

        async def recording_send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    self.recorder.add(f"{scope['method']} {scope['path']} -> {status}",
                                      b"".join(chunks).decode("utf-8", errors="replace"))
            await send(message)

        await self.app(scope, receive, recording_send)


class LogRecorder(logging.Handler):
    """The console's stdout handler as `build()` sets it up (JSON, personal numbers masked), into the recorder."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__(level=logging.DEBUG)
        self.recorder = recorder
        self.setFormatter(JsonFormatter("console"))
        self.addFilter(PersonalNumberFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.recorder.add(f"log {record.name}", self.format(record))


def new_password() -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(20))


class RunningConsole:
    def __init__(self, settings: Settings, port: int) -> None:
        self.settings = settings
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.recorder = Recorder()
        self.context = ConsoleContext.open(settings)
        self.app = create_app(self.context)
        self.log_handler = LogRecorder(self.recorder)
        config = uvicorn.Config(RecordingApp(self.app, self.recorder), host="127.0.0.1", port=port, log_config=None,
                                proxy_headers=False, server_header=False, access_log=True, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="console-under-attack", daemon=True)
        self.previous_level = logging.NOTSET

    def start(self) -> None:
        root = logging.getLogger()
        self.previous_level = root.level
        root.addHandler(self.log_handler)
        root.setLevel(min(root.level, logging.INFO))  # the service logs at INFO: record what it would write
        self.thread.start()
        asyncio.run(wait_until(lambda: self.server.started or not self.thread.is_alive(), timeout_s=60,
                               what="the console to listen"))
        if not self.server.started:
            raise RuntimeError("the console did not start (see the log above)")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        logging.getLogger().removeHandler(self.log_handler)
        logging.getLogger().setLevel(self.previous_level)
        self.context.close()

    def client(self, user_agent: str = USER_AGENT) -> requests.Session:
        """A browser-like client: its own cookie jar, the pre-login CSRF cookie fetched and echoed."""
        session = requests.Session()
        session.headers["User-Agent"] = user_agent
        self.prime(session)
        return session

    def prime(self, session: requests.Session) -> None:
        """A logged-out client's pre-login CSRF cookie, echoed in the header as a browser's script does."""
        answer = session.get(f"{self.base_url}/api/csrf", timeout=30)
        answer.raise_for_status()
        session.headers[CSRF_HEADER] = session.cookies.get(CSRF_COOKIE) or answer.json()["csrf_token"]

    def unmasked_since(self, start: int) -> list[tuple[str, list[str]]]:
        """What the console wrote since `start` with an unmasked number. The one exception is the
        point of a reveal: its 200 answer carries that customer's national id in full (audited)."""
        def revealed(item: Recorded) -> set[str]:
            found = _REVEAL.match(item.where)
            national_id = self.context.customers.national_id_of(found.group(1)) if found else None
            return {national_id} if national_id else set()

        return self.recorder.unmasked(start, revealed)

    def audit_entries(self, **terms: Any) -> list[AuditEntry]:
        return self.context.audit.search(AuditQuery(**terms, limit=5000))

    def create_operator(self, role: str, username: str | None = None) -> Operator:
        """A user with one role, logged in through the real first login: one-time password, new
        password, greeting and TOTP enrolment, then the session and its CSRF token."""
        username = username or f"{role}{secrets.token_hex(3)}"
        one_time = new_password()
        self.context.accounts.create_user(username, one_time, {role: None}, created_by="attack-tests")
        client = self.client()
        first = client.post(f"{self.base_url}/api/session", json={"username": username, "password": one_time}, timeout=30)
        assert first.status_code == 200 and first.json()["setup_required"], first.text
        client.headers[CSRF_HEADER] = first.json()["csrf_token"]
        secret = client.post(f"{self.base_url}/api/account/totp", timeout=30).json()["totp_secret"]
        password = new_password()
        greeting = f"greetings {username}"
        setup_step = int(time.time()) // 30
        done = client.post(f"{self.base_url}/api/account/setup", timeout=30, json={
            "greeting": greeting, "code": pyotp.TOTP(secret).generate_otp(setup_step), "new_password": password})
        assert done.status_code == 200, done.text
        operator = Operator(self, username, role, password, secret, greeting, client, last_step=setup_step)
        operator.log_in()
        return operator


@dataclass
class Operator:
    console: RunningConsole
    username: str
    role: str
    password: str
    totp_secret: str
    greeting: str
    client: requests.Session
    last_step: int  # the newest TOTP time step used: the console accepts each step once

    def log_in(self) -> None:
        """A usual login from the client the user set up on: no challenge, a fresh session and CSRF token."""
        self.client.cookies.clear()
        self.console.prime(self.client)
        answer = self.client.post(f"{self.console.base_url}/api/session", timeout=30,
                                  json={"username": self.username, "password": self.password})
        assert answer.status_code == 200, answer.text
        assert answer.json()["greeting"] == self.greeting
        self.client.headers[CSRF_HEADER] = answer.json()["csrf_token"]

    def fresh_code(self) -> str:
        """A code of a time step not used yet: the console takes the previous, current or next
        step's code, each once, so this waits only when the next step is used up too."""
        asyncio.run(wait_until(lambda: int(time.time()) // 30 + 1 > self.last_step, timeout_s=65,
                               what="a TOTP time step not used yet"))
        current = int(time.time()) // 30
        step = next(step for step in (current, current + 1) if step > self.last_step)
        self.last_step = step
        return pyotp.TOTP(self.totp_secret).generate_otp(step)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.client.request(method, f"{self.console.base_url}{path}", timeout=30, **kwargs)


@contextmanager
def running_console(settings: Settings, port: int) -> Iterator[RunningConsole]:
    console = RunningConsole(settings, port)
    console.start()
    try:
        yield console
    finally:
        console.stop()
