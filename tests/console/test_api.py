"""The console's API as an operator uses it: the first login to logout, challenges, the lockout,
sessions bound to their client and expiring, CSRF, campaigns, models, a customer masked and
revealed once, the auditor's search and export, the admin's limits, the published OpenAPI."""
from __future__ import annotations

import csv
import datetime as dt
import io

from services.console.accounts import current_code
from services.console.audit import AuditQuery
from services.console.masking import find_unmasked
from services.models.registry import DataFingerprint
from tests.console.conftest import CARD, CUSTOMER, NATIONAL_ID, PASSWORD, PHONE, Console

CAMPAIGN = {"product": "wealth_fund", "value": 90, "priority": 2.0, "triggers": ["salary_credit"],
            "channels": [{"channel": "email", "template": f"Console-made offer: call {PHONE}"}],
            "eligibility": {"min_age": 18, "exclude_holders": False}}


def _actions(console: Console, **query: object) -> list[tuple[str, str, str]]:
    entries = console.context.audit.search(AuditQuery(limit=5000, **query))  # type: ignore[arg-type]
    return [(entry.actor, entry.action, entry.outcome) for entry in reversed(entries)]


def test_the_first_login_sets_up_the_account_and_the_journey_ends_at_logout(console_anywhere: Console) -> None:
    console = console_anywhere
    console.context.accounts.create_user("root.admin", PASSWORD, {"admin": None}, created_by="cli",
                                         must_change_password=False)
    client = console.client()
    assert client.get("/api/session").status_code == 401
    logged_in = client.post("/api/session", json={"username": "root.admin", "password": PASSWORD})
    assert logged_in.status_code == 200 and logged_in.json()["setup_required"] is True
    assert client.get("/api/users").json() == {"error": "finish setting up your account first (/account/setup)"}
    offered = client.post("/api/account/totp").json()
    assert offered["otpauth_uri"].startswith("otpauth://totp/")
    refused = client.post("/api/account/setup", json={"greeting": "Blue heron", "code": "000000"})
    assert refused.status_code == 422 and "code" in refused.json()["error"]
    done = client.post("/api/account/setup", json={"greeting": "Blue heron at dawn",
                                                   "code": current_code(offered["totp_secret"], console.clock())})
    assert done.status_code == 200 and done.json()["greeting"] == "Blue heron at dawn"
    me = client.get("/api/session").json()
    assert (me["username"], me["roles"], me["greeting"]) == ("root.admin", ["admin"], "Blue heron at dawn")
    home = client.get("/")
    assert home.status_code == 200 and "Blue heron at dawn" in home.text  # the anti-phishing greeting, after login
    assert client.delete("/api/session").status_code == 200
    assert client.get("/api/session").status_code == 401
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    assert _actions(console) == [("root.admin", "login.ok", "ok"), ("root.admin", "account.totp_offered", "ok"),
                                 ("root.admin", "account.setup", "failed"), ("root.admin", "account.setup", "ok"),
                                 ("root.admin", "logout", "ok")]


def test_a_login_from_a_new_client_is_challenged_and_from_a_known_one_is_not(console: Console) -> None:
    user = console.user("ana.lyst", "analyst")
    first = console.client("browser-a")
    challenged = first.post("/api/session", json={"username": user.username, "password": user.password})
    assert challenged.status_code == 202 and challenged.json()["reasons"] == ["new_client"]
    assert first.get("/api/session").status_code == 401  # no session before the code
    assert first.post("/api/session/verify", json={"code": "000000"}).status_code == 401
    assert first.post("/api/session/verify", json={"code": console.code(user.totp_secret)}).status_code == 200
    assert first.delete("/api/session").status_code == 200
    again = first.post("/api/session", json={"username": user.username, "password": user.password})
    assert again.status_code == 200 and again.json()["greeting"].startswith("Hello ana.lyst")
    other = console.client("browser-b")
    assert other.post("/api/session", json={"username": user.username, "password": user.password}).status_code == 202
    # A challenge is bound to the client that logged in with the password.
    thief = console.client("browser-c")
    thief.http.cookies.set("cs_challenge", other.http.cookies.get("cs_challenge"))
    assert thief.post("/api/session/verify", json={"code": console.code(user.totp_secret)}).status_code == 401
    assert ("ana.lyst", "login.challenged", "denied") in _actions(console)
    assert ("ana.lyst", "login.code_failed", "failed") in _actions(console)


def test_a_burst_of_logins_from_a_known_client_is_challenged(sqlite_database: str, personal_numbers_stay_masked) -> None:  # type: ignore[no-untyped-def]
    from tests.console.conftest import open_console

    console = open_console(sqlite_database, personal_numbers_stay_masked, console_login_burst=2)
    user = console.user("ana.lyst", "analyst")
    client = console.logged_in(user, "browser-a")
    answers = [client.post("/api/session", json={"username": user.username, "password": user.password}) for _ in range(2)]
    assert [answer.status_code for answer in answers] == [200, 202]
    assert answers[1].json()["reasons"] == ["burst"]
    console.context.close()


def test_five_failed_logins_lock_the_account_until_an_admin_unlocks_it(console: Console) -> None:
    admin = console.logged_in(console.user("root.admin", "admin"))
    user = console.user("ana.lyst", "analyst")
    client = console.client("browser-a")
    statuses = [client.post("/api/session", json={"username": user.username, "password": f"guess {n}"}).status_code
                for n in range(5)]
    assert statuses == [401, 401, 401, 401, 423]
    right = client.post("/api/session", json={"username": user.username, "password": user.password})
    assert right.status_code == 423 and "locked" in right.json()["error"]
    listed = {u["username"]: u for u in admin.get("/api/users").json()["users"]}
    assert listed["ana.lyst"]["locked_until"] is not None
    assert admin.post("/api/users/ana.lyst/unlock").status_code == 200
    assert client.post("/api/session", json={"username": user.username, "password": user.password}).status_code == 202
    actions = _actions(console, actor="ana.lyst")
    assert actions[:7] == [("ana.lyst", "login.failed", "failed")] * 4 + [
        ("ana.lyst", "account.locked", "denied"), ("ana.lyst", "login.locked", "denied"), ("ana.lyst", "login.locked", "denied")]
    assert ("root.admin", "account.unlocked", "ok") in _actions(console)


def test_a_session_taken_to_another_client_ends_there_and_here(console: Console) -> None:
    client = console.logged_in(console.user("ana.lyst", "analyst"), "browser-a")
    assert client.get("/api/session").status_code == 200
    stolen = console.client("browser-evil")
    stolen.http.cookies.set("cs_session", client.http.cookies.get("cs_session"))
    assert stolen.get("/api/session").status_code == 401
    assert client.get("/api/session").status_code == 401  # the session was ended, not just refused there
    assert ("ana.lyst", "session.client_changed", "denied") in _actions(console)


def test_a_session_ends_when_idle_and_at_its_maximum_age(console: Console) -> None:
    user = console.user("ana.lyst", "analyst")
    client = console.logged_in(user)
    console.clock.advance(899)
    assert client.get("/api/session").status_code == 200
    console.clock.advance(901)
    assert client.get("/api/session").status_code == 401
    client = console.logged_in(user)
    logged_in_at = console.clock()
    while client.get("/api/session").status_code == 200:  # busy all day: never idle, still ended after eight hours
        assert console.clock() - logged_in_at <= 8 * 3600, "the session outlived its maximum age"
        console.clock.advance(800)
    assert console.clock() - logged_in_at > 8 * 3600
    assert ("ana.lyst", "session.expired", "denied") in _actions(console)


def test_a_state_change_without_the_sessions_csrf_token_is_refused(console: Console) -> None:
    client = console.logged_in(console.user("mia.marketer", "marketer"))
    url = "/api/campaigns/payday_fund"
    bare = client.http.put(url, json=CAMPAIGN)  # no header
    assert bare.status_code == 403 and "CSRF" in bare.json()["error"]
    wrong = client.http.put(url, json=CAMPAIGN, headers={"X-CSRF-Token": "guessed"})
    assert wrong.status_code == 403
    # A forged page that planted its own cs_csrf cookie and header still lacks the session's token.
    client.http.cookies.set("cs_csrf", "planted")
    planted = client.http.put(url, json=CAMPAIGN, headers={"X-CSRF-Token": "planted"})
    assert planted.status_code == 403
    form = client.http.post("/campaigns/payday_fund/delete", data={"csrf_token": "planted"})
    assert form.status_code == 403
    assert [a for a in _actions(console) if a[1] == "csrf.refused"] == [("mia.marketer", "csrf.refused", "denied")] * 4
    assert console.context.campaigns.store.get("payday_fund") is None


def test_campaigns_are_created_changed_and_deleted_by_marketers_only(console: Console) -> None:
    marketer = console.logged_in(console.user("mia.marketer", "marketer"))
    analyst = console.logged_in(console.user("ana.lyst", "analyst"))
    listing = marketer.get("/api/campaigns").json()
    assert {c["source"] for c in listing["campaigns"]} == {"file"}
    file_id = listing["campaigns"][0]["campaign_id"]
    assert marketer.put(f"/api/campaigns/{file_id}", json=CAMPAIGN).status_code == 409
    refused = marketer.put("/api/campaigns/payday_fund", json={**CAMPAIGN, "channels": [{"channel": "fax", "template": "t"}],
                                                              "triggers": ["lottery_win"]})
    assert refused.status_code == 422 and "channels.0" in refused.json()["error"] and "lottery_win" in refused.json()["error"]
    assert marketer.put("/api/campaigns/Bad-Id", json=CAMPAIGN).status_code == 422
    assert analyst.put("/api/campaigns/payday_fund", json=CAMPAIGN).status_code == 403
    created = marketer.put("/api/campaigns/payday_fund", json=CAMPAIGN)
    assert created.status_code == 201 and created.json()["action"] == "created"
    changed = marketer.put("/api/campaigns/payday_fund", json={**CAMPAIGN, "value": 95})
    assert changed.status_code == 200 and changed.json()["action"] == "updated"
    got = analyst.get("/api/campaigns/payday_fund").json()
    assert (got["source"], got["value"]) == ("console", 95)
    assert "138****5678" in got["channels"][0]["template"]  # a number typed into a template is masked on the way out
    assert marketer.delete("/api/campaigns/payday_fund").status_code == 200
    assert marketer.get("/api/campaigns/payday_fund").status_code == 404
    history = analyst.get("/api/campaigns/payday_fund/history").json()["changes"]
    assert [(c["action"], c["actor"]) for c in history] == [("created", "mia.marketer"), ("updated", "mia.marketer"),
                                                            ("deleted", "mia.marketer")]
    assert marketer.get("/api/campaigns/payday_fund/uplift").status_code == 503  # no Redis in this test
    assert [a[1] for a in _actions(console, actor="mia.marketer") if a[1].startswith("campaign.")] == [
        "campaign.change_refused", "campaign.change_refused", "campaign.created", "campaign.updated", "campaign.deleted"]


def test_model_versions_are_listed_with_their_metrics_and_deployments(console: Console) -> None:
    registry = console.context.registry
    version = registry.register(model_name="propensity.wealth_fund", algorithm="fedlr", parameters={"l2": 0.01},
                                feature_names=["age", "income"], rows_learned=5000, iterations=20,
                                fingerprint=DataFingerprint(), operator="ana", started_at=dt.datetime.now(dt.UTC),
                                metrics={"auc": 0.74, "ks": 0.35})
    registry.record_deployment(version.service_number, operator="sre", target="scoring")
    client = console.logged_in(console.user("sam.sre", "sre"))
    models = client.get("/api/models").json()["models"]
    assert [(m["model_name"], m["version"], m["metrics"]["auc"]) for m in models] == [("propensity.wealth_fund", 1, 0.74)]
    assert models[0]["deployments"][0]["target"] == "scoring"
    assert client.get("/api/models/propensity.wealth_fund").json()["models"][0]["service_number"] == version.service_number
    assert client.get("/api/models/nothing.here").status_code == 404
    assert "propensity.wealth_fund" in client.get("/models").text


def test_a_customer_is_shown_masked_and_in_full_once_after_reauthentication(console: Console) -> None:
    console.seed_customer()
    user = console.user("mia.marketer", "marketer")
    client = console.logged_in(user)
    shown = client.get(f"/api/customers/{CUSTOMER}")
    record = shown.json()
    assert shown.headers["cache-control"] == "no-store"
    assert record["national_id"] == "110***********002X"
    assert record["profile"]["segment"] == "affluent" and record["profile"]["updated_at"].endswith("+00:00")
    assert record["offers"][0]["message"] == "Call 138****5678 or pay with card 622************0123"
    assert [s["scores"][0]["product"] for s in record["scores"]] == ["wealth_fund"]
    assert record["responses"][0]["outcome"] == "clicked"
    assert client.get("/api/customers/C9999999").status_code == 404

    wrong = client.post(f"/api/customers/{CUSTOMER}/reveal",
                        json={"field": "national_id", "password": "not my password", "code": console.code(user.totp_secret)})
    assert wrong.status_code == 401 and NATIONAL_ID not in wrong.text
    console.seen.revealed.add(NATIONAL_ID)  # from here on the one reveal below may carry it
    revealed = client.post(f"/api/customers/{CUSTOMER}/reveal",
                           json={"field": "national_id", "password": user.password, "code": console.code(user.totp_secret)})
    assert revealed.status_code == 200 and revealed.json()["value"] == NATIONAL_ID
    assert revealed.headers["cache-control"] == "no-store"
    assert client.get(f"/api/customers/{CUSTOMER}").json()["national_id"] == "110***********002X"  # one response only
    page = client.get(f"/customers/{CUSTOMER}")
    assert "110***********002X" in page.text and NATIONAL_ID not in page.text
    reveals = console.context.audit.search(AuditQuery(action="customer.reveal"))
    assert [(e.actor, e.outcome, e.customer_id) for e in reveals] == [("mia.marketer", "ok", CUSTOMER),
                                                                       ("mia.marketer", "failed", CUSTOMER)]
    assert find_unmasked(reveals[0].detail) == [] and '"field": "national_id"' in reveals[0].detail
    reads = console.context.audit.search(AuditQuery(action="customer.read", customer_id=CUSTOMER))
    assert len(reads) == 3 and {e.address for e in reads} == {"testclient"}  # API, API after the reveal, page
    leaks = [text for where, text in console.seen.texts if NATIONAL_ID in text]
    assert len(leaks) == 1  # the reveal's own answer, and nothing else


def test_an_auditor_searches_the_log_and_exports_it_masked(console: Console) -> None:
    console.seed_customer()
    marketer = console.logged_in(console.user("mia.marketer", "marketer"))
    marketer.get(f"/api/customers/{CUSTOMER}")
    console.client().post("/api/session", json={"username": PHONE, "password": "guess"})  # a number typed as a username
    auditor = console.logged_in(console.user("aud.itor", "auditor"))
    by_customer = auditor.get("/api/audit", params={"customer_id": CUSTOMER}).json()["entries"]
    assert [(e["actor"], e["action"]) for e in by_customer] == [("mia.marketer", "customer.read")]
    by_user = auditor.get("/api/audit", params={"actor": "mia.marketer", "action": "login"}).json()["entries"]
    assert [e["action"] for e in by_user] == ["login.ok", "login.challenged"]
    failed = auditor.get("/api/audit", params={"action": "login.failed"}).json()["entries"]
    assert failed[0]["actor"] == "138****5678"
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert auditor.get("/api/audit", params={"since": later}).json()["entries"] == []
    exported = auditor.get("/api/audit/export.csv", params={"actor": "mia.marketer"})
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert {row["actor"] for row in rows} == {"mia.marketer"} and len(rows) >= 3
    assert auditor.get("/api/audit/verify").json()["intact"] is True
    assert [a[1] for a in _actions(console, actor="aud.itor") if a[1].startswith("audit.")] == [
        "audit.searched", "audit.searched", "audit.searched", "audit.searched", "audit.exported", "audit.verified"]
    assert marketer.get("/api/audit").status_code == 403


def test_admins_manage_users_but_cannot_grant_themselves_or_remove_the_last_admin(console: Console) -> None:
    admin = console.logged_in(console.user("root.admin", "admin"))
    assert admin.put("/api/users/root.admin/grants/auditor", json={}).status_code == 403
    assert admin.delete("/api/users/root.admin/grants/admin").status_code == 409
    assert admin.post("/api/users/root.admin/disable").status_code == 409
    created = admin.post("/api/users", json={"username": "new.marketer", "grants": [{"role": "marketer"}]})
    assert created.status_code == 201
    one_time = created.json()["one_time_password"]
    assert admin.post("/api/users", json={"username": "new.marketer", "grants": [{"role": "analyst"}]}).status_code == 409
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    assert admin.put("/api/users/new.marketer/grants/analyst", json={"expires_at": past}).status_code == 422
    soon = (dt.datetime.fromtimestamp(console.clock(), dt.UTC) + dt.timedelta(days=7)).isoformat()
    assert admin.put("/api/users/new.marketer/grants/analyst", json={"expires_at": soon}).status_code == 200

    newcomer = console.client("browser-new")
    first = newcomer.post("/api/session", json={"username": "new.marketer", "password": one_time})
    assert first.status_code == 200 and first.json()["setup_required"]
    secret = newcomer.post("/api/account/totp").json()["totp_secret"]
    keeps = newcomer.post("/api/account/setup", json={"greeting": "Hi", "code": current_code(secret, console.clock())})
    assert keeps.status_code == 422 and "new_password" in keeps.json()["error"]
    done = newcomer.post("/api/account/setup", json={"greeting": "Hi", "code": current_code(secret, console.clock()),
                                                     "new_password": "my own new password"})
    assert done.status_code == 200
    assert newcomer.get("/api/campaigns").status_code == 200
    assert admin.post("/api/users/new.marketer/disable").status_code == 200
    assert newcomer.get("/api/campaigns").status_code == 401  # disabling ends the user's sessions
    assert ("root.admin", "grant.added", "denied") in _actions(console)


def test_a_body_over_the_limit_is_refused_and_the_openapi_document_is_published(console: Console) -> None:
    client = console.logged_in(console.user("mia.marketer", "marketer"))
    huge = client.put("/api/campaigns/payday_fund", content=b"{" + b" " * 300_000 + b"}",
                      headers={"content-type": "application/json"})
    assert huge.status_code == 413
    document = console.client().get("/openapi.json").json()
    assert {"/api/session", "/api/campaigns/{campaign_id}", "/api/customers/{customer_id}/reveal", "/api/audit",
            "/api/users/{username}/grants/{role}"} <= set(document["paths"])
    assert not any(path.startswith(("/login", "/customers")) for path in document["paths"])  # pages are not the API
    headers = console.client().get("/login").headers
    assert headers["x-frame-options"] == "DENY" and "default-src 'self'" in headers["content-security-policy"]
    assert CARD not in str(document)


def test_a_nul_or_control_character_in_any_input_is_never_a_server_error(console_anywhere: Console) -> None:
    console = console_anywhere
    auditor = console.logged_in(console.user("aud.itor", "auditor"))
    stranger = console.client("browser\x01evil")
    assert stranger.post("/api/session", json={"username": "mal\x00lory", "password": "x\x00"}).status_code == 401
    assert auditor.get("/api/audit", params={"actor": "mal\x00lory", "action": "login\x00"}).status_code == 200
    assert auditor.get("/api/users/%00x").status_code in (403, 404)  # no such route for an auditor's GET: never a 500
    failed = auditor.get("/api/audit", params={"action": "login.failed"}).json()["entries"]
    assert [entry["actor"] for entry in failed] == ["mallory"]
