"""Every console route, walked with every role and with a logged-out client, answers as the
permission table says: the routes come from the app's own route list, so a new route is walked too."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from fastapi.routing import APIRoute

from services.campaigns.definitions import Campaign
from services.console.app import create_app
from services.console.roles import PERMISSIONS, ROLE_PERMISSIONS, ROLES
from services.console.web import PUBLIC_ROUTES, check_every_route_is_guarded, console_routes, guard_of
from services.models.registry import DataFingerprint
from tests.console.conftest import CUSTOMER, Client, Console

SAMPLES = {"campaign_id": "walk_campaign", "customer_id": CUSTOMER, "model_name": "propensity.walk",
           "username": "walk.target", "role": "analyst"}
# Walked last: they end the client's session.
ENDS_SESSION = {("DELETE", "/api/session"), ("POST", "/logout")}


def _routes(console: Console) -> list[tuple[str, str, APIRoute]]:
    return sorted(console_routes(console.app), key=lambda item: ((item[0], item[1]) in ENDS_SESSION, item[1], item[0]))


def _concrete(path: str) -> str:
    return re.sub(r"{(\w+)}", lambda match: SAMPLES[match.group(1)], path)


def _call(client: Client, method: str, path: str) -> int:
    if method in ("GET", "HEAD"):
        return int(client.request(method, path).status_code)
    if path.startswith("/api/"):
        return int(client.request(method, path, json={}).status_code)
    return int(client.request(method, path, data={"csrf_token": client.csrf()}).status_code)


def _seed(console: Console) -> None:
    console.seed_customer()
    console.context.campaigns.store.put(Campaign.model_validate({
        "campaign_id": "walk_campaign", "product": "wealth_fund", "value": 10, "triggers": ["salary_credit"],
        "channels": [{"channel": "sms", "template": "Call 13812345678 today"}]}), actor="test")
    console.context.registry.register(model_name="propensity.walk", algorithm="logistic_regression", parameters={},
                                      feature_names=["age"], rows_learned=10, iterations=1, fingerprint=DataFingerprint(),
                                      operator="test", started_at=dt.datetime.now(dt.UTC), metrics={"auc": 0.7})
    console.user("walk.target", "analyst")


def test_every_route_has_a_guard_or_is_public(console: Console) -> None:
    routes = _routes(console)
    assert len(routes) > 40
    for method, path, route in routes:
        guard = guard_of(route)
        assert (guard is None) == ((method, path) in PUBLIC_ROUTES), f"{method} {path}"
        if guard is not None and guard.permission is not None:  # type: ignore[attr-defined]
            assert guard.permission in PERMISSIONS, f"{method} {path} names an undeclared permission"  # type: ignore[attr-defined]


def test_an_app_with_an_unguarded_route_does_not_start(console: Console) -> None:
    app = create_app(console.context)

    @app.get("/api/forgotten")
    def forgotten() -> dict[str, str]:
        return {"personal": "data"}

    with pytest.raises(AssertionError, match="GET /api/forgotten"):
        check_every_route_is_guarded(app)


def test_every_route_answers_every_role_and_a_logged_out_client_as_the_permission_table_says(console: Console) -> None:
    _seed(console)
    clients = {role: console.logged_in(console.user(f"walk.{role}", role)) for role in ROLES}
    clients["anonymous"] = console.client("pytest-anonymous/1")
    mismatches, walked = [], 0
    for method, path, route in _routes(console):
        guard = guard_of(route)
        for who, client in clients.items():
            status = _call(client, method, _concrete(path))
            walked += 1
            if guard is None:  # public: the same for everyone, never a refusal of the caller
                expected_ok = status not in (401, 403)
            elif who == "anonymous":
                expected_ok = status == (401 if path.startswith("/api/") else 303)
            elif guard.permission is None or guard.permission in ROLE_PERMISSIONS[who]:  # type: ignore[attr-defined]
                expected_ok = status not in (401, 403)
            else:
                expected_ok = status == 403
            if not expected_ok:
                mismatches.append(f"{who}: {method} {path} -> {status}")
    assert mismatches == []
    assert walked == len(_routes(console)) * len(clients)
    # Each refusal of a role is in the audit log with the permission it lacked.
    denied = console.context.audit.search(__import__("services.console.audit", fromlist=["AuditQuery"])
                                          .AuditQuery(action="access.denied", limit=5000))
    assert {entry.actor for entry in denied} == {f"walk.{role}" for role in ROLES}
    assert all('"permission"' in entry.detail for entry in denied)


def test_an_expired_grant_gives_nothing(console: Console) -> None:
    console.seed_customer()
    user = console.user("temp.analyst", "analyst", expires_at_s=console.clock() + 600)
    client = console.logged_in(user)
    assert client.get(f"/api/customers/{CUSTOMER}").status_code == 200
    console.clock.advance(600)  # within the session's idle time: the session lives on, the grant does not
    assert client.get(f"/api/customers/{CUSTOMER}").status_code == 403
    assert client.get("/api/session").json()["roles"] == []
