"""schemathesis against the running console's OpenAPI document: every operation, with requests
generated from its schema (and outside it), as every role and as a logged-out client, and not one
server error.

The document is read from the console itself (`/openapi.json`), so a new endpoint is fuzzed the
day it is added. Each role uses a real session (login, CSRF token) and sends the requests over
HTTP. Logging out (`DELETE /api/session`) is left out: it would end the session the rest of the
run needs; the attack and journey tests log out on purpose. The two operations that re-check the
password (a reveal, a password change) run last: five wrong tries lock the account and end its
session, as they should, so the test checks the session was still the role's just before them.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.security.console_server import Operator, RunningConsole
from tests.security.test_attacks import feed_customer

ROLES = ("admin", "marketer", "analyst", "auditor", "sre")
EXAMPLES_PER_OPERATION = 8
# Each of these hashes or checks a password with argon2 (half a second here): fewer examples.
ARGON2_OPERATIONS = {("POST", "/api/session"), ("POST", "/api/users"), ("POST", "/api/users/{username}/password-reset"),
                     ("POST", "/api/customers/{customer_id}/reveal"), ("PUT", "/api/account/password"),
                     ("POST", "/api/account/setup")}
LEFT_OUT = {("DELETE", "/api/session")}
LOCKING = {("POST", "/api/customers/{customer_id}/reveal"), ("PUT", "/api/account/password")}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzzed(request: pytest.FixtureRequest) -> tuple[RunningConsole, Any, dict[str, Operator]]:
    """The console on either engine (text PostgreSQL refuses, such as a NUL, is an engine's own 500),
    its OpenAPI document as it serves it, and a logged-in user of every role."""
    console: RunningConsole = request.getfixturevalue("console" if request.param == "sqlite" else "console_on_postgresql")
    feed_customer(console)
    return (console, schemathesis.openapi.from_url(f"{console.base_url}/openapi.json"),
            {role: console.create_operator(role) for role in ROLES})


def server_errors(console: RunningConsole, schema: Any, client: requests.Session,
                  before_locking: Callable[[], None]) -> tuple[int, list[str]]:
    """Run every operation's generated cases through `client`; the requests sent and each 5xx."""
    errors: list[str] = []
    sent = 0
    operations = sorted((result.ok() for result in schema.get_all_operations()),
                        key=lambda operation: (operation.method.upper(), operation.path) in LOCKING)
    assert len(operations) >= 25, [(operation.method, operation.path) for operation in operations]
    checked = False
    for operation in operations:
        if (operation.method.upper(), operation.path) in LEFT_OUT:
            continue
        if (operation.method.upper(), operation.path) in LOCKING and not checked:
            before_locking()
            checked = True

        examples = EXAMPLES_PER_OPERATION // 2 if (operation.method.upper(), operation.path) in ARGON2_OPERATIONS \
            else EXAMPLES_PER_OPERATION

        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            nonlocal sent
            response = case.call(base_url=console.base_url, session=client, timeout=30)
            sent += 1
            try:
                case.validate_response(response, checks=[not_a_server_error])
            except Exception as failure:  # schemathesis raises its failures grouped; we collect them all
                errors.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {failure!s:.200}")

        run()
    return sent, errors


@pytest.mark.slow
@pytest.mark.parametrize("role", [*ROLES, "logged_out"])
def test_no_operation_answers_a_server_error_for_any_role(fuzzed: tuple[RunningConsole, Any, dict[str, Operator]],
                                                          role: str) -> None:
    console, schema, operators = fuzzed
    client = console.client() if role == "logged_out" else operators[role].client
    whoami: list[int | list[str]] = []

    def still_this_role() -> None:  # every request so far was made as this role (or as nobody)
        answer = client.get(f"{console.base_url}/api/session", timeout=30)
        whoami.append(answer.json()["roles"] if answer.status_code == 200 else answer.status_code)

    sent, errors = server_errors(console, schema, client, still_this_role)
    assert sent >= 25 * 3
    assert errors == []
    assert whoami == [401 if role == "logged_out" else [role]]
