"""Finding BJKJ-004: attacks on the running console (uvicorn, a real port, a real SQL database),
each refused with a clear status and written to the audit log.

Brute force (the lockout), replay of captured requests, SQL injection and XSS in every input
field (stored and reflected), path traversal, oversized bodies, and privilege escalation by
editing a role or an id. After each test the conftest scans every response body and log line the
console wrote for an unmasked phone, national id or card number.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import time
import urllib.parse
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import inspect, text

from services.console.accounts import ChallengeRow, KnownClientRow, LoginAttemptRow
from services.console.audit import AuditRow
from services.console.sessions import SessionRow
from services.console.web import CSRF_HEADER, MAX_BODY_BYTES, SESSION_COOKIE
from services.core.kafka import Inbound
from services.protocol.stream_messages import CustomerIdentity, CustomerProfile
from tests.security.console_server import Operator, RunningConsole, new_password

NATIONAL_ID = "110105194912310021"
CUSTOMER = "C-attack-1"
SQL_INJECTIONS = (
    "' OR '1'='1",
    "admin'--",
    "x'; DROP TABLE console_users; --",
    "1; DELETE FROM console_audit; --",
    "\" OR \"\"=\"",
    "') UNION SELECT username, password_hash FROM console_users --",
)
XSS = (
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(1)>",
    "<svg/onload=alert(1)>",
    "javascript:alert(1)",
    "'><iframe src=//evil.example>",
)
# A NUL and a lone surrogate: text SQLite takes and PostgreSQL refuses (an engine error is a 500).
ODD_TEXT = ("nul\x00byte", "lone\ud800surrogate")
PAYLOADS = SQL_INJECTIONS + XSS + ODD_TEXT
RAW_MARKUP = ("<script>alert(1)</script>", "<img src=x onerror", "<svg/onload", "<iframe src")


def in_url(text_: str) -> str:
    """Text percent-encoded for a path or query, byte for byte (a lone surrogate included, as a raw client sends it)."""
    return urllib.parse.quote(text_.encode("utf-8", "surrogatepass"), safe="")


def feed_customer(console: RunningConsole, customer_id: str = CUSTOMER, national_id: str = NATIONAL_ID) -> None:
    """A customer in the console's view, as its feed would store it from the bank's topics."""
    now_ms = int(time.time() * 1000)
    profile = CustomerProfile(customer_id=customer_id, age=41, tenure_months=30, monthly_income_minor=1_200_000,
                              balance_minor=5_000_000, products_held=("card",), segment="affluent", preferred_channel="sms",
                              timezone="Asia/Shanghai", consent_marketing=True, updated_at_ms=now_ms)
    identity = CustomerIdentity(customer_id=customer_id, national_id=national_id, updated_at_ms=now_ms)
    asyncio.run(console.context.customers.feed_profiles([Inbound(profile, customer_id.encode(), "customer.profiles", 0, 0, now_ms, None)]))
    asyncio.run(console.context.customers.feed_identities([Inbound(identity, customer_id.encode(), "customer.identities", 0, 0,
                                                                   now_ms, None)]))


def audited(console: RunningConsole, action: str, actor: str | None = None, outcome: str | None = None) -> list[dict]:  # type: ignore[type-arg]
    entries = [entry.as_dict() for entry in console.audit_entries(action=action, actor=actor)]
    return [entry for entry in entries if outcome is None or entry["outcome"] == outcome]


def table_rows(console: RunningConsole) -> dict[str, int]:
    """Row counts of every table but the append-only audit log and the login bookkeeping, which grow."""
    growing = {row.__tablename__ for row in (AuditRow, SessionRow, LoginAttemptRow, KnownClientRow, ChallengeRow)}
    engine = console.context.engine
    names = [name for name in inspect(engine).get_table_names() if name not in growing]
    with engine.connect() as connection:
        return {name: connection.execute(text(f'SELECT COUNT(*) FROM "{name}"')).scalar_one() for name in names}  # nosec B608  # names from the engine's own catalog


@pytest.fixture(scope="module")
def operators(console: RunningConsole) -> dict[str, Operator]:
    feed_customer(console)
    return {role: console.create_operator(role) for role in ("admin", "marketer", "analyst", "auditor", "sre")}


# --- brute force -----------------------------------------------------------------------------------------------
def test_brute_force_is_stopped_by_the_lockout_and_every_try_is_audited(console: RunningConsole,
                                                                       operators: dict[str, Operator]) -> None:
    victim = console.create_operator("analyst")
    attacker = console.client(user_agent="hydra/9.5")
    limit = console.settings.console_lockout_failures
    statuses = [attacker.post(f"{console.base_url}/api/session", timeout=30,
                              json={"username": victim.username, "password": f"guess-{attempt}-Aa1!xyz"}).status_code
                for attempt in range(limit + 3)]
    assert statuses[:limit - 1] == [401] * (limit - 1)
    assert statuses[limit - 1:] == [423] * 4, statuses  # locked at the limit, and it stays locked
    right = attacker.post(f"{console.base_url}/api/session", json={"username": victim.username, "password": victim.password},
                          timeout=30)
    assert right.status_code == 423 and "locked" in right.json()["error"]  # the right password does not open it either
    assert len(audited(console, "login.failed", victim.username, "failed")) == limit - 1
    assert len(audited(console, "account.locked", victim.username, "denied")) == 1
    assert len(audited(console, "login.locked", victim.username, "denied")) >= 4
    assert all(entry["user_agent"] == "hydra/9.5" for entry in audited(console, "login.failed", victim.username))

    unlocked = operators["admin"].request("POST", f"/api/users/{victim.username}/unlock")
    assert unlocked.status_code == 200, unlocked.text
    assert audited(console, "account.unlocked", operators["admin"].username)
    victim.log_in()


def test_guessing_usernames_teaches_nothing_and_is_audited(console: RunningConsole) -> None:
    attacker = console.client(user_agent="spray/1")
    answers = [attacker.post(f"{console.base_url}/api/session", json={"username": name, "password": "Winter2026!!x"}, timeout=30)
               for name in ("root", "administrator", "nobody-here")]
    assert {answer.status_code for answer in answers} == {401}
    assert len({answer.json()["error"] for answer in answers}) == 1  # the same words for an unknown user as a wrong password
    assert len([entry for entry in audited(console, "login.failed") if entry["user_agent"] == "spray/1"]) == 3


# --- replay ----------------------------------------------------------------------------------------------------
def _replay(console: RunningConsole, captured: requests.PreparedRequest) -> requests.Response:
    """Send a captured request again, byte for byte: its cookies, CSRF header and body."""
    with requests.Session() as replayer:
        return replayer.send(captured.copy(), timeout=30)


def test_a_captured_reveal_replayed_is_refused_and_audited(console: RunningConsole, operators: dict[str, Operator]) -> None:
    marketer = operators["marketer"]
    answer = marketer.request("POST", f"/api/customers/{CUSTOMER}/reveal",
                              json={"field": "national_id", "password": marketer.password, "code": marketer.fresh_code()})
    assert answer.status_code == 200, answer.text
    assert NATIONAL_ID in answer.text
    replayed = _replay(console, answer.request)
    assert replayed.status_code == 401 and NATIONAL_ID not in replayed.text
    reveals = audited(console, "customer.reveal", marketer.username)
    assert [entry["outcome"] for entry in reveals[:2]] == ["failed", "ok"]  # newest first
    assert reveals[1]["customer_id"] == CUSTOMER


def test_a_captured_login_code_replayed_is_refused_and_audited(console: RunningConsole, operators: dict[str, Operator]) -> None:
    analyst = operators["analyst"]
    laptop = console.client(user_agent="a new laptop")
    challenged = laptop.post(f"{console.base_url}/api/session", json={"username": analyst.username, "password": analyst.password},
                             timeout=30)
    assert challenged.status_code == 202 and "new_client" in challenged.json()["reasons"]
    verified = laptop.post(f"{console.base_url}/api/session/verify", json={"code": analyst.fresh_code()}, timeout=30)
    assert verified.status_code == 200, verified.text
    replayed = _replay(console, verified.request)
    assert replayed.status_code == 401 and SESSION_COOKIE not in replayed.cookies
    assert audited(console, "login.code_without_challenge", outcome="denied")
    assert audited(console, "login.challenged", analyst.username, "denied")


def test_a_captured_request_replayed_after_logout_or_from_another_client_is_refused_and_audited(
        console: RunningConsole, operators: dict[str, Operator]) -> None:
    sre = console.create_operator("sre")
    captured = sre.request("GET", "/api/system")
    assert captured.status_code == 200, captured.text

    stolen = captured.request.copy()
    stolen.headers["User-Agent"] = "curl/8.0 (the thief's machine)"
    from_elsewhere = _replay(console, stolen)
    assert from_elsewhere.status_code == 401
    assert audited(console, "session.client_changed", sre.username, "denied")
    # The session is ended by the stolen use; so is a replay from the owner's own client now.
    assert _replay(console, captured.request).status_code == 401

    sre.log_in()
    change = sre.request("PUT", "/api/account/greeting", json={"greeting": "a quiet harbour"})
    assert change.status_code == 200, change.text
    assert sre.request("DELETE", "/api/session").status_code == 200
    after_logout = _replay(console, change.request)
    assert after_logout.status_code == 401
    assert audited(console, "session.ended", sre.username, "denied")


# --- injection and XSS -----------------------------------------------------------------------------------------
LOGIN_TARGET = "injection.target"


@pytest.fixture(scope="module")
def operators_on_postgresql(console_on_postgresql: RunningConsole) -> dict[str, Operator]:
    feed_customer(console_on_postgresql)
    return {role: console_on_postgresql.create_operator(role) for role in ("marketer", "auditor", "admin")}


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest) -> tuple[RunningConsole, dict[str, Operator]]:
    """The console on either engine, with its operators and the user the login payloads are tried on."""
    suffix = "" if request.param == "sqlite" else "_on_postgresql"
    console, operators = request.getfixturevalue(f"console{suffix}"), request.getfixturevalue(f"operators{suffix}")
    if console.context.accounts.user(LOGIN_TARGET) is None:
        console.context.accounts.create_user(LOGIN_TARGET, new_password(), {"analyst": None}, created_by="attack-tests")
    return console, operators


@pytest.mark.parametrize("payload", PAYLOADS)
def test_injection_and_xss_in_every_field_are_refused_or_stored_inert(target: tuple[RunningConsole, dict[str, Operator]],
                                                                    payload: str) -> None:
    console, operators = target
    marketer, auditor, admin = operators["marketer"], operators["auditor"], operators["admin"]
    before = table_rows(console)
    seq_before = console.context.audit.head()[0]

    # Login fields: never a session. The wrong passwords lock the user they are tried on (423 from then on).
    stranger = console.client()
    for body in ({"username": payload, "password": payload}, {"username": LOGIN_TARGET, "password": payload}):
        login = stranger.post(f"{console.base_url}/api/session", json=body, timeout=30)
        assert login.status_code in (401, 422, 423), login.text
        assert SESSION_COOKIE not in stranger.cookies
    # Path parameters (customer, campaign, user, model, role): refused by their patterns, never a 500.
    quoted = in_url(payload)
    for method, path in (("GET", f"/api/customers/{quoted}"), ("GET", f"/api/campaigns/{quoted}"),
                         ("GET", f"/api/models/{quoted}"), ("POST", f"/api/users/{quoted}/unlock"),
                         ("PUT", f"/api/users/{marketer.username}/grants/{quoted}")):
        who = admin if path.startswith("/api/users") else marketer
        answer = who.request(method, path, json={} if method == "PUT" else None)
        assert answer.status_code in (404, 422), (path, answer.status_code, answer.text)
    # A new user's name: refused.
    created = admin.request("POST", "/api/users", json={"username": payload, "grants": [{"role": "analyst"}]})
    assert created.status_code == 422
    # Audit search terms, reflected in the JSON answer, the page and the CSV export.
    for path in ("/api/audit", "/audit", "/api/audit/export.csv"):
        answer = auditor.request("GET", f"{path}?actor={quoted}&action={quoted}&customer_id={in_url(payload[:64])}")
        assert answer.status_code in (200, 422), (path, answer.status_code)
        assert not any(markup in answer.text for markup in RAW_MARKUP), path
    # Stored: the greeting, shown after every login and on the pages.
    stored = marketer.request("PUT", "/api/account/greeting", json={"greeting": payload})
    assert stored.status_code in (200, 422), stored.text
    if stored.status_code == 200:
        page = marketer.request("GET", "/")
        assert page.status_code == 200 and not any(markup in page.text for markup in RAW_MARKUP)
        printable = "".join(character for character in payload.strip() if character.isprintable())
        assert marketer.request("GET", "/api/session").json()["greeting"] == printable  # kept as data, inert in JSON
        assert marketer.request("PUT", "/api/account/greeting", json={"greeting": marketer.greeting}).status_code == 200
    # Stored: a campaign's texts, shown on its page.
    campaign = {"campaign_id": "xss_probe", "product": "travel_insurance", "value": 10.0, "triggers": ["card_spend_abroad"],
                "channels": [{"channel": "sms", "template": payload}]}
    put = marketer.request("PUT", "/api/campaigns/xss_probe", json=campaign)
    assert put.status_code in (200, 201, 422), put.text
    if put.status_code in (200, 201):
        page = marketer.request("GET", "/campaigns/xss_probe")
        assert page.status_code == 200 and not any(markup in page.text for markup in RAW_MARKUP)
        assert marketer.request("GET", "/api/campaigns/xss_probe").json()["channels"][0]["template"] == payload
        assert marketer.request("DELETE", "/api/campaigns/xss_probe").status_code == 200

    after = table_rows(console)
    changed = {name: (before.get(name), count) for name, count in after.items() if before.get(name) != count}
    assert set(before) == set(after), "a table appeared or vanished"
    assert set(changed) <= {"campaign_changes"}, changed  # the probe campaign came and went; its history stays
    assert console.context.audit.verify().intact  # the chain is whole: nothing was deleted or edited through SQL
    assert console.context.audit.head()[0] > seq_before


# --- path traversal --------------------------------------------------------------------------------------------
TRAVERSALS = (
    "/static/../../../../etc/passwd",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e/%2e%2e/%2e%2e/services/core/config.py",
    "/static/..%5c..%5c..%5cpyproject.toml",
    "/static/%252e%252e/%252e%252e/pyproject.toml",
    "/api/audit/export.csv/../../../etc/passwd",
    "/api/customers/..%2f..%2fetc%2fpasswd",
)


def _raw_get(console: RunningConsole, path: str, cookies: str = "") -> tuple[int, str]:
    """A GET with the path exactly as written (requests and browsers would normalise the dots)."""
    connection = http.client.HTTPConnection("127.0.0.1", console.port, timeout=30)
    connection.putrequest("GET", path, skip_accept_encoding=True)
    if cookies:
        connection.putheader("Cookie", cookies)
    connection.endheaders()
    answer = connection.getresponse()
    body = answer.read().decode("utf-8", errors="replace")
    connection.close()
    return answer.status, body


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_reaches_no_file_and_is_audited(console: RunningConsole, operators: dict[str, Operator],
                                                       path: str) -> None:
    auditor = operators["auditor"]
    cookies = "; ".join(f"{name}={value}" for name, value in auditor.client.cookies.items())
    status, body = _raw_get(console, path, cookies)
    assert status in (400, 404), (status, body[:200])
    assert "root:" not in body and "[build-system]" not in body and "class Settings" not in body
    assert any(entry["target"].endswith(path) or path in entry["target"] for entry in audited(console, "request.refused")), path
    assert (console_static := _raw_get(console, "/static/console.css"))[0] == 200 and console_static[1]


# --- oversized bodies ------------------------------------------------------------------------------------------
def test_oversized_bodies_get_413_and_are_audited(console: RunningConsole, operators: dict[str, Operator]) -> None:
    marketer = operators["marketer"]
    huge = json.dumps({"greeting": "x" * (MAX_BODY_BYTES + 1)})
    declared = marketer.request("PUT", "/api/account/greeting", data=huge, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and "over" in declared.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted as the body streams in
        yield b'{"greeting": "'
        for _ in range(MAX_BODY_BYTES // 4096 + 2):
            yield b"y" * 4096
        yield b'"}'

    streamed = marketer.request("PUT", "/api/account/greeting", data=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    login = console.client().post(f"{console.base_url}/api/session", data=huge, headers={"Content-Type": "application/json"},
                                  timeout=30)
    assert login.status_code == 413
    refused = [entry for entry in audited(console, "request.refused") if "413" in entry["detail"]]
    assert len(refused) >= 3
    assert marketer.request("GET", "/api/session").json()["greeting"] == marketer.greeting  # nothing of it was stored


# --- privilege escalation --------------------------------------------------------------------------------------
def test_editing_a_role_or_an_id_in_a_request_is_refused_and_audited(console: RunningConsole,
                                                                     operators: dict[str, Operator]) -> None:
    analyst, admin, auditor, marketer = (operators[role] for role in ("analyst", "admin", "auditor", "marketer"))
    attempts = {
        "grant oneself admin": analyst.request("PUT", f"/api/users/{analyst.username}/grants/admin", json={}),
        "make an admin account": analyst.request("POST", "/api/users", json={"username": "mallory", "grants": [{"role": "admin"}]}),
        "unlock someone": auditor.request("POST", f"/api/users/{analyst.username}/unlock"),
        "reveal without the permission": analyst.request("POST", f"/api/customers/{CUSTOMER}/reveal",
                                                         json={"field": "national_id", "password": analyst.password,
                                                               "code": "000000"}),
        "change a campaign": analyst.request("PUT", "/api/campaigns/escalation", json={}),
        "read the audit log": marketer.request("GET", "/api/audit"),
        "an admin reads a customer": admin.request("GET", f"/api/customers/{CUSTOMER}"),
    }
    assert {name: answer.status_code for name, answer in attempts.items()} == dict.fromkeys(attempts, 403)
    denied = audited(console, "access.denied", outcome="denied")
    for operator, method, path in ((analyst, "PUT", f"/api/users/{analyst.username}/grants/admin"),
                                   (auditor, "POST", f"/api/users/{analyst.username}/unlock"),
                                   (admin, "GET", f"/api/customers/{CUSTOMER}")):
        assert any(entry["actor"] == operator.username and entry["target"] == f"{method} {path}" for entry in denied)

    # An admin may grant, but not to themselves (separation of duties).
    self_grant = admin.request("PUT", f"/api/users/{admin.username}/grants/marketer", json={})
    assert self_grant.status_code == 403
    assert audited(console, "grant.added", admin.username, "denied")
    # Roles and user names smuggled into bodies are refused, not merged.
    smuggled = [analyst.request("PUT", "/api/account/greeting", json={"greeting": "hi", "roles": ["admin"]}),
                analyst.request("PUT", "/api/account/greeting", json={"greeting": "hi", "username": admin.username})]
    assert [answer.status_code for answer in smuggled] == [422, 422]
    # A campaign id edited in the body, or a campaign of the reviewed file: neither is changed.
    file_campaign = next(c["campaign_id"] for c in marketer.request("GET", "/api/campaigns").json()["campaigns"]
                         if c["source"] == "file")
    before = marketer.request("GET", f"/api/campaigns/{file_campaign}").json()
    document = {key: value for key, value in before.items() if key != "source"} | {"value": 9999.0}
    edited_id = marketer.request("PUT", "/api/campaigns/mine", json=document)
    overwrite = marketer.request("PUT", f"/api/campaigns/{file_campaign}", json=document)
    assert (edited_id.status_code, overwrite.status_code) == (422, 409)
    assert marketer.request("GET", f"/api/campaigns/{file_campaign}").json() == before
    refused = audited(console, "campaign.change_refused", marketer.username, "denied")
    assert {entry["target"] for entry in refused[:2]} == {"campaign:mine", f"campaign:{file_campaign}"}
    # A forged or altered session cookie opens nothing.
    forged = requests.get(f"{console.base_url}/api/users", cookies={SESSION_COOKIE: analyst.client.cookies[SESSION_COOKIE][:-2] + "xx"},
                          headers={CSRF_HEADER: analyst.client.headers[CSRF_HEADER]}, timeout=30)
    assert forged.status_code == 401
    assert analyst.request("GET", "/api/session").json()["roles"] == ["analyst"]
