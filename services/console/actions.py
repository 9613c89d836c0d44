"""What the console does, once for both its JSON API (api.py) and its pages (pages.py).

Each action checks its own rules, writes its audit entry (who, what, outcome, from where) and
returns plain data, or raises `ActionError` with an HTTP status and a message naming the field.
Times leave as ISO 8601 text, never as epoch numbers (a 13-digit millisecond count would look
like a card number to the masking).
"""
from __future__ import annotations

import datetime as dt
import math
import secrets
from dataclasses import dataclass, field
from typing import Any

import pydantic
from fastapi import Request
from redis.exceptions import RedisError

from services.campaigns.definitions import Campaign, validation_problems
from services.campaigns.uplift import uplift
from services.console.accounts import AccountError, User
from services.console.audit import AuditEntry, AuditQuery, export_csv
from services.console.customers import REVEALABLE, CustomerRecord
from services.console.web import Operator, audit, caller_of, context_of
from services.core.logs import mask


class ActionError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def iso_s(epoch_s: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC; None and 0 (never) as None.

    >>> iso_s(0), iso_s(1700000000)
    (None, '2023-11-14T22:13:20+00:00')
    """
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat() if epoch_s else None


def readable(document: Any) -> Any:
    """A stored document with every `*_ms` field as ISO text under the name without `_ms`.

    >>> readable({"scored_at_ms": 1700000000000, "scores": [{"decided_at_ms": 0}]})
    {'scored_at': '2023-11-14T22:13:20+00:00', 'scores': [{'decided_at': None}]}
    """
    if isinstance(document, dict):
        return {(key[:-3] if key.endswith("_ms") and isinstance(value, int) else key):
                (iso_s(value / 1000) if key.endswith("_ms") and isinstance(value, int) else readable(value))
                for key, value in document.items()}
    if isinstance(document, list):
        return [readable(item) for item in document]
    return document


# --- logging in ------------------------------------------------------------------------------------
@dataclass
class LoginStep:
    """Where a login stands: `session` (logged in: cookies to set), `challenge` (a code is asked for)."""

    kind: str
    username: str
    session_token: str = ""
    csrf_token: str = ""
    challenge_token: str = ""
    reasons: list[str] = field(default_factory=list)
    setup_required: bool = False
    greeting: str | None = None


def login(request: Request, username: str, password: str) -> LoginStep:
    """The password step; an abnormal login (new client, burst) is challenged for a code."""
    context, caller = context_of(request), caller_of(request)
    result = context.accounts.authenticate(username, password, caller.address)
    if result.locked_now:
        audit(request, "account.locked", actor=username, target=f"user:{username}", outcome="denied",
              detail={"after_failures": context.settings.console_lockout_failures})
    if result.status == "locked":
        audit(request, "login.locked", actor=username, target=f"user:{username}", outcome="denied")
        raise ActionError(423, "this account is locked after repeated failed logins; try again later or ask an admin")
    if result.status == "disabled":
        audit(request, "login.disabled", actor=username, target=f"user:{username}", outcome="denied")
        raise ActionError(403, "this account is disabled")
    if result.status == "wrong" or result.user is None:
        audit(request, "login.failed", actor=username, target=f"user:{username}", outcome="failed")
        raise ActionError(401, "wrong username or password")
    user = result.user
    reasons = context.accounts.abnormal(username, caller.client_hash)
    if reasons and user.has_second_factor:
        token = context.accounts.open_challenge(username, caller.client_hash, reasons)
        audit(request, "login.challenged", actor=username, target=f"user:{username}", outcome="denied",
              detail={"reasons": reasons})
        return LoginStep("challenge", username, challenge_token=token, reasons=reasons)
    # First login: no second factor enrolled yet; the one-time password from the admin stands in for it.
    return _open_session(request, user, reasons)


def verify_code(request: Request, challenge_token: str, code: str) -> LoginStep:
    context, caller = context_of(request), caller_of(request)
    found = context.accounts.challenge(challenge_token, caller.client_hash) if challenge_token else None
    if found is None:
        audit(request, "login.code_without_challenge", outcome="denied")
        raise ActionError(401, "no open login challenge from this client: log in with your password first")
    username, reasons = found
    result = context.accounts.check_code(username, code, caller.address)
    if result.locked_now:
        audit(request, "account.locked", actor=username, target=f"user:{username}", outcome="denied",
              detail={"after_failures": context.settings.console_lockout_failures})
    if result.status == "locked":
        context.accounts.close_challenge(challenge_token)
        audit(request, "login.locked", actor=username, target=f"user:{username}", outcome="denied")
        raise ActionError(423, "this account is locked after repeated failed logins; try again later or ask an admin")
    if result.status != "ok" or result.user is None:
        audit(request, "login.code_failed", actor=username, target=f"user:{username}", outcome="failed")
        raise ActionError(401, "wrong or already used code")
    context.accounts.close_challenge(challenge_token)
    return _open_session(request, result.user, reasons)


def _open_session(request: Request, user: User, reasons: list[str]) -> LoginStep:
    context, caller = context_of(request), caller_of(request)
    context.accounts.succeeded(user.username, caller.client_hash)
    token, session = context.sessions.open(user.username, caller.client_hash, caller.address,
                                           "setup" if user.needs_setup else "active")
    audit(request, "login.ok", actor=user.username, target=f"user:{user.username}",
          detail={"flagged": reasons, "setup": user.needs_setup})
    return LoginStep("session", user.username, session_token=token, csrf_token=session.csrf_token, reasons=reasons,
                     setup_required=user.needs_setup, greeting=user.greeting)


def logout(request: Request, operator: Operator) -> None:
    context_of(request).sessions.end(operator.session.token_hash, "logout")
    audit(request, "logout", target=f"user:{operator.username}")


def whoami(request: Request, operator: Operator) -> dict[str, Any]:
    user = context_of(request).accounts.user(operator.username)
    assert user is not None
    return {"username": operator.username, "roles": list(operator.roles), "permissions": sorted(operator.permissions),
            "greeting": user.greeting, "setup_required": operator.session.state == "setup",
            "grants": [{"role": g.role, "expires_at": iso_s(g.expires_at_s)} for g in user.grants]}


# --- one's own account -----------------------------------------------------------------------------
def offer_totp(request: Request, operator: Operator) -> dict[str, str]:
    context = context_of(request)
    user = context.accounts.user(operator.username)
    if user is None or user.has_second_factor:
        raise ActionError(409, "an authenticator is already enrolled")
    secret = context.accounts.offer_totp(operator.username)
    audit(request, "account.totp_offered", target=f"user:{operator.username}")
    return {"totp_secret": secret, "otpauth_uri": context.accounts.totp_uri(operator.username, secret)}


def finish_setup(request: Request, operator: Operator, greeting: str, code: str, new_password: str | None) -> dict[str, Any]:
    context = context_of(request)
    try:
        context.accounts.finish_setup(operator.username, greeting=greeting, code=code, new_password=new_password)
    except AccountError as error:
        audit(request, "account.setup", target=f"user:{operator.username}", outcome="failed", detail={"error": str(error)})
        raise ActionError(422, str(error)) from error
    context.sessions.activate(operator.session.token_hash)
    context.sessions.end_all_of(operator.username, "setup", keep=operator.session.token_hash)
    audit(request, "account.setup", target=f"user:{operator.username}")
    user = context.accounts.user(operator.username)
    return {"status": "active", "greeting": user.greeting if user else None}


def set_greeting(request: Request, operator: Operator, greeting: str) -> None:
    try:
        context_of(request).accounts.set_greeting(operator.username, greeting)
    except AccountError as error:
        raise ActionError(422, str(error)) from error
    audit(request, "account.greeting_changed", target=f"user:{operator.username}")


def change_password(request: Request, operator: Operator, current: str, new: str) -> None:
    context = context_of(request)
    try:
        result = context.accounts.change_password(operator.username, current, new, caller_of(request).address)
    except AccountError as error:
        raise ActionError(422, str(error)) from error
    if result.status != "ok":
        audit(request, "account.password_changed", target=f"user:{operator.username}", outcome="failed")
        if result.status == "locked":
            context.sessions.end_all_of(operator.username, "locked")
            raise ActionError(423, "this account is now locked after repeated failures")
        raise ActionError(401, "current_password: wrong password")
    context.sessions.end_all_of(operator.username, "password_changed", keep=operator.session.token_hash)
    audit(request, "account.password_changed", target=f"user:{operator.username}")


# --- campaigns ---------------------------------------------------------------------------------------
def campaigns(request: Request) -> dict[str, Any]:
    catalog = context_of(request).campaigns
    catalog.refresh()
    return {"campaigns": [_described(request, c) for c in catalog.live.campaigns], "revision": catalog.live.version[1]}


def campaign(request: Request, campaign_id: str) -> dict[str, Any]:
    catalog = context_of(request).campaigns
    catalog.refresh()
    found = next((c for c in catalog.live.campaigns if c.campaign_id == campaign_id), None)
    if found is None:
        raise ActionError(404, f"no campaign {campaign_id!r}")
    return _described(request, found)


def put_campaign(request: Request, operator: Operator, campaign_id: str, document: Any) -> tuple[int, dict[str, Any]]:
    catalog = context_of(request).campaigns
    catalog.refresh()
    if campaign_id in catalog.live.file_ids:
        audit(request, "campaign.change_refused", target=f"campaign:{campaign_id}", outcome="denied",
              detail={"reason": "defined in the campaigns file"})
        raise ActionError(409, f"campaign {campaign_id!r} is defined in the campaigns file; change it there")
    if not isinstance(document, dict):
        raise ActionError(422, "body must be a JSON object (one campaign)")
    if document.setdefault("campaign_id", campaign_id) != campaign_id:  # an id edited to reach another campaign
        audit(request, "campaign.change_refused", target=f"campaign:{campaign_id}", outcome="denied",
              detail={"reason": "campaign_id differs from the path", "campaign_id": str(document["campaign_id"])[:64]})
        raise ActionError(422, "campaign_id: differs from the one in the path")
    try:
        parsed = Campaign.model_validate(document)
    except pydantic.ValidationError as error:
        audit(request, "campaign.change_refused", target=f"campaign:{campaign_id}", outcome="failed",
              detail={"problems": validation_problems(error)[:500]})
        raise ActionError(422, f"invalid campaign: {validation_problems(error)}") from error
    change = catalog.store.put(parsed, operator.username)
    catalog.refresh()
    audit(request, f"campaign.{change.action}", target=f"campaign:{campaign_id}", detail={"revision": change.revision})
    return (201 if change.action == "created" else 200), {"campaign": parsed.model_dump(mode="json"),
                                                          "action": change.action, "revision": change.revision}


def delete_campaign(request: Request, operator: Operator, campaign_id: str) -> dict[str, Any]:
    catalog = context_of(request).campaigns
    catalog.refresh()
    if campaign_id in catalog.live.file_ids:
        raise ActionError(409, f"campaign {campaign_id!r} is defined in the campaigns file; change it there")
    change = catalog.store.delete(campaign_id, operator.username)
    if change is None:
        raise ActionError(404, f"no console campaign {campaign_id!r}")
    catalog.refresh()
    audit(request, "campaign.deleted", target=f"campaign:{campaign_id}", detail={"revision": change.revision})
    return {"action": change.action, "revision": change.revision}


def campaign_history(request: Request, campaign_id: str) -> dict[str, Any]:
    changes = context_of(request).campaigns.store.history(campaign_id)
    return {"campaign_id": campaign_id, "changes": [
        {"revision": c.revision, "action": c.action, "actor": c.actor, "changed_at": c.changed_at.isoformat(),
         "document": c.document} for c in changes]}


async def campaign_uplift(request: Request, campaign_id: str) -> dict[str, Any]:
    redis = context_of(request).redis
    if redis is None:
        raise ActionError(503, "uplift needs dispatch's Redis (REDIS_URL)")
    try:
        report = await uplift(redis, context_of(request).settings.redis_key_prefix, campaign_id)
    except (RedisError, OSError) as error:
        raise ActionError(503, f"dispatch's Redis does not answer: {type(error).__name__}") from error
    return {key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in vars(report).items()}


def _described(request: Request, found: Campaign) -> dict[str, Any]:
    source = "file" if found.campaign_id in context_of(request).campaigns.live.file_ids else "console"
    return found.model_dump(mode="json") | {"source": source}


# --- models --------------------------------------------------------------------------------------------
def models(request: Request, model_name: str | None = None) -> dict[str, Any]:
    versions = context_of(request).registry.details(model_name)
    if model_name is not None and not versions:
        raise ActionError(404, f"no model {model_name!r}")
    return {"models": [{
        "model_name": v.model_name, "version": v.version, "service_number": v.service_number,
        "parent_service_number": v.parent_service_number, "algorithm": v.algorithm, "parameters": v.parameters,
        "features": len(v.feature_names), "feature_names": v.feature_names, "rows_learned": v.rows_learned,
        "iterations": v.iterations, "data_fingerprint": v.data_fingerprint,
        "data_window_start": iso_s(v.data_window_start_ms / 1000) if v.data_window_start_ms else None,
        "data_window_end": iso_s(v.data_window_end_ms / 1000) if v.data_window_end_ms else None,
        "metrics": v.metrics, "operator": v.operator, "started_at": v.started_at.isoformat(),
        "finished_at": v.finished_at.isoformat(),
        "deployments": [{"deployed_at": d.deployed_at.isoformat(), "operator": d.operator, "target": d.target,
                         "result": d.result} for d in v.deployments],
    } for v in versions]}


# --- customers -----------------------------------------------------------------------------------------
def customer(request: Request, customer_id: str) -> dict[str, Any]:
    """A customer's record, personal numbers masked; the read is audited (found or not)."""
    record = context_of(request).customers.customer(customer_id)
    audit(request, "customer.read", target=f"customer:{customer_id}", customer_id=customer_id,
          outcome="ok" if record else "failed", detail={"found": record is not None})
    if record is None:
        raise ActionError(404, f"no customer {customer_id!r} in the console's view")
    return readable(record.masked())


def reveal(request: Request, operator: Operator, customer_id: str, field_name: str, password: str, code: str) -> dict[str, Any]:
    """One personal number in full, for this response only, after the password and a fresh code."""
    context, caller = context_of(request), caller_of(request)
    target = f"customer:{customer_id}"
    if field_name not in REVEALABLE:
        raise ActionError(422, f"field: one of {', '.join(REVEALABLE)}")
    checked = context.accounts.authenticate(operator.username, password, caller.address)
    if checked.status == "ok":
        checked = context.accounts.check_code(operator.username, code, caller.address)
    if checked.status != "ok":
        audit(request, "customer.reveal", target=target, customer_id=customer_id, outcome="failed",
              detail={"field": field_name, "reason": "re-authentication failed"})
        if checked.status == "locked":
            context.sessions.end_all_of(operator.username, "locked")
            raise ActionError(423, "this account is now locked after repeated failures")
        raise ActionError(401, "re-authentication failed: wrong password or code")
    value = context.customers.national_id_of(customer_id)
    audit(request, "customer.reveal", target=target, customer_id=customer_id, outcome="ok" if value else "failed",
          detail={"field": field_name, "shown": mask(value) if value else None})
    if value is None:
        raise ActionError(404, f"no {field_name} for customer {customer_id!r}")
    request.state.reveal = (value,)  # MaskingMiddleware lets exactly this value through, in this response only
    return {"customer_id": customer_id, "field": field_name, "value": value}


def customer_record(request: Request, customer_id: str) -> CustomerRecord | None:
    return context_of(request).customers.customer(customer_id)


# --- the audit log ---------------------------------------------------------------------------------------
def search_audit(request: Request, query: AuditQuery) -> list[dict[str, Any]]:
    entries = context_of(request).audit.search(query)
    audit(request, "audit.searched", detail={"actor": query.actor, "customer_id": query.customer_id,
                                             "action": query.action, "results": len(entries)})
    return [entry.as_dict() for entry in entries]


def export_audit(request: Request, query: AuditQuery) -> str:
    entries: list[AuditEntry] = context_of(request).audit.search(query)
    audit(request, "audit.exported", detail={"actor": query.actor, "customer_id": query.customer_id,
                                             "action": query.action, "rows": len(entries)})
    return export_csv(entries)


def verify_audit(request: Request) -> dict[str, Any]:
    report = context_of(request).audit.verify()
    audit(request, "audit.verified", outcome="ok" if report.intact else "failed",
          detail={"entries": report.entries, "problems": len(report.problems)})
    return {"intact": report.intact, "entries": report.entries, "head_seq": report.head_seq,
            "head_hash": report.head_hash, "problems": report.problems}


# --- users and grants ------------------------------------------------------------------------------------
def users(request: Request) -> list[dict[str, Any]]:
    now = context_of(request).accounts.clock()
    return [{"username": u.username, "roles": list(u.roles_at(now)), "disabled": u.disabled,
             "locked_until": iso_s(u.locked_until_s) if u.locked_until_s > now else None,
             "setup_required": u.needs_setup, "created_at": iso_s(u.created_at_s), "created_by": u.created_by,
             "grants": [{"role": g.role, "granted_by": g.granted_by, "expires_at": iso_s(g.expires_at_s),
                         "expired": g.expires_at_s is not None and g.expires_at_s <= now} for g in u.grants]}
            for u in context_of(request).accounts.users()]


def create_user(request: Request, operator: Operator, username: str, roles: dict[str, float | None]) -> dict[str, str]:
    """A new user with a one-time password (shown to the admin once, handed over out of band)."""
    one_time = secrets.token_urlsafe(12)
    try:
        context_of(request).accounts.create_user(username, one_time, roles, created_by=operator.username)
    except AccountError as error:
        audit(request, "user.created", target=f"user:{username}", outcome="failed", detail={"error": str(error)})
        raise ActionError(409 if "exists" in str(error) else 422, str(error)) from error
    audit(request, "user.created", target=f"user:{username}", detail={"roles": sorted(roles)})
    return {"username": username, "one_time_password": one_time}


def grant(request: Request, operator: Operator, username: str, role: str, expires_at: dt.datetime | None) -> None:
    if username == operator.username:
        audit(request, "grant.added", target=f"user:{username}", outcome="denied",
              detail={"role": role, "reason": "a grant to oneself"})
        raise ActionError(403, "a user cannot grant roles to themselves: another admin must")
    expires_at_s = None if expires_at is None else aware(expires_at).timestamp()
    try:
        context_of(request).accounts.grant(username, role, operator.username, expires_at_s)
    except AccountError as error:
        audit(request, "grant.added", target=f"user:{username}", outcome="failed", detail={"role": role, "error": str(error)})
        raise ActionError(404 if "no user" in str(error) else 422, str(error)) from error
    audit(request, "grant.added", target=f"user:{username}", detail={"role": role, "expires_at": iso_s(expires_at_s)})


def revoke(request: Request, operator: Operator, username: str, role: str) -> None:
    context = context_of(request)
    if role == "admin" and _last_admin(request, username):
        raise ActionError(409, "this is the last admin: grant admin to someone else first")
    try:
        removed = context.accounts.revoke(username, role)
    except AccountError as error:
        raise ActionError(404, str(error)) from error
    if not removed:
        raise ActionError(404, f"{username!r} holds no {role!r} grant")
    audit(request, "grant.revoked", target=f"user:{username}", detail={"role": role})


def unlock(request: Request, operator: Operator, username: str) -> None:
    try:
        context_of(request).accounts.unlock(username)
    except AccountError as error:
        raise ActionError(404, str(error)) from error
    audit(request, "account.unlocked", target=f"user:{username}")


def set_disabled(request: Request, operator: Operator, username: str, disabled: bool) -> None:
    context = context_of(request)
    if disabled and username == operator.username:
        raise ActionError(409, "you cannot disable your own account")
    if disabled and _last_admin(request, username):
        raise ActionError(409, "this is the last admin: grant admin to someone else first")
    try:
        context.accounts.set_disabled(username, disabled)
    except AccountError as error:
        raise ActionError(404, str(error)) from error
    if disabled:
        context.sessions.end_all_of(username, "disabled")
    audit(request, "account.disabled" if disabled else "account.enabled", target=f"user:{username}")


def reset_password(request: Request, operator: Operator, username: str) -> dict[str, str]:
    context = context_of(request)
    if username == operator.username:
        raise ActionError(409, "change your own password under /account")
    try:
        one_time = context.accounts.reset_password(username)
    except AccountError as error:
        raise ActionError(404, str(error)) from error
    context.sessions.end_all_of(username, "password_reset")
    audit(request, "account.password_reset", target=f"user:{username}")
    return {"username": username, "one_time_password": one_time}


def _last_admin(request: Request, username: str) -> bool:
    now = context_of(request).accounts.clock()
    admins = [u.username for u in context_of(request).accounts.users() if not u.disabled and "admin" in u.roles_at(now)]
    return admins == [username]


def aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


# --- the console itself ----------------------------------------------------------------------------------
def system(request: Request) -> dict[str, Any]:
    context = context_of(request)
    runner = context.runner
    return {"database": context.engine.dialect.name, "audit_head_seq": context.audit.head()[0],
            "feed": {"enabled": context.settings.console_feed, "running": runner is not None,
                     "partitions_assigned": bool(runner and runner.assigned), "degraded": bool(runner and runner.degraded),
                     "batches": runner.batches if runner else 0}}
