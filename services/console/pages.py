"""The console's web pages: server-rendered HTML (Jinja2, autoescaped), plain forms, no JavaScript.

Why server-rendered: every page is a form or a table over the same actions the API runs, so
there is one place where permission, CSRF, masking and audit are decided (web.py, actions.py),
nothing to build, and nothing for a script injected into a page to run against (the CSP
allows no inline script). Each form carries the CSRF token; each page shows only the links the
user's permissions open. A page a logged-out browser asks for redirects to /login.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from services.console import actions
from services.console.api import CampaignId, CustomerId, Role, Username
from services.console.audit import AuditQuery
from services.console.roles import ROLES
from services.console.web import (
    CHALLENGE_COOKIE,
    Operator,
    clear_session_cookies,
    context_of,
    csrf_value,
    require,
    set_session_cookies,
)

TEMPLATES = Path(__file__).parent / "templates"
templates = Jinja2Templates(env=Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True))
router = APIRouter(include_in_schema=False)
# The navigation: a link shows when the user's permissions open it.
NAVIGATION = (("/", "Home", None), ("/campaigns", "Campaigns", "campaigns.read"), ("/models", "Models", "models.read"),
              ("/customers", "Customers", "customers.read"), ("/audit", "Audit log", "audit.read"),
              ("/users", "Users", "users.read"), ("/system", "System", "system.read"), ("/account", "Account", None))
Text = Annotated[str, Form(max_length=256)]
CustomerIdPattern = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    operator: Operator | None = getattr(request.state, "operator", None)
    permissions = operator.permissions if operator else frozenset()
    navigation = [(href, label) for href, label, needs in NAVIGATION
                  if operator and operator.session.state == "active" and (needs is None or needs in permissions)]
    return templates.TemplateResponse(request, template, {
        "operator": operator, "permissions": permissions, "navigation": navigation, "csrf": csrf_value(request),
        **values}, status_code=status)


def error_page(request: Request, status: int, detail: str) -> HTMLResponse:
    return render(request, "error.html", status=status, detail=detail)


def _redirect(to: str) -> RedirectResponse:
    return RedirectResponse(to, status_code=303)


def _after_login(request: Request, step: actions.LoginStep) -> Response:
    secure = context_of(request).settings.console_cookie_secure
    if step.kind == "challenge":
        response = _redirect("/login/verify")
        response.set_cookie(CHALLENGE_COOKIE, step.challenge_token, httponly=True, secure=secure, samesite="strict",
                            path="/", max_age=300)
        return response
    response = _redirect("/account/setup" if step.setup_required else "/")
    set_session_cookies(response, step.session_token, step.csrf_token, secure)
    response.delete_cookie(CHALLENGE_COOKIE, path="/")
    return response


def _utc(value: str) -> dt.datetime | None:
    """A datetime-local form value as UTC; empty: no expiry."""
    if not value.strip():
        return None
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError as error:
        raise actions.ActionError(422, f"expires_at: {value!r} is not a date and time") from error
    return actions.aware(moment)


# --- logging in and out -------------------------------------------------------------------------------------
@router.get("/login")
def login_page(request: Request) -> HTMLResponse:
    return render(request, "login.html")


@router.post("/login")
def login_submit(request: Request, username: Annotated[str, Form(max_length=64)], password: Text) -> Response:
    try:
        return _after_login(request, actions.login(request, username, password))
    except actions.ActionError as error:
        return render(request, "login.html", status=error.status, error=error.detail)


@router.get("/login/verify")
def verify_page(request: Request) -> HTMLResponse:
    return render(request, "verify.html")


@router.post("/login/verify")
def verify_submit(request: Request, code: Annotated[str, Form(max_length=6)]) -> Response:
    try:
        return _after_login(request, actions.verify_code(request, request.cookies.get(CHALLENGE_COOKIE, ""), code))
    except actions.ActionError as error:
        return render(request, "verify.html", status=error.status, error=error.detail)


@router.post("/logout")
def logout(request: Request, operator: Annotated[Operator, Depends(require(None, setup=True))]) -> Response:
    actions.logout(request, operator)
    response = _redirect("/login")
    clear_session_cookies(response, context_of(request).settings.console_cookie_secure)
    return response


# --- home and one's own account -------------------------------------------------------------------------------
@router.get("/")
def home(request: Request, operator: Annotated[Operator, Depends(require(None))]) -> HTMLResponse:
    return render(request, "home.html", me=actions.whoami(request, operator))


@router.get("/account/setup")
def setup_page(request: Request, operator: Annotated[Operator, Depends(require(None, setup=True))]) -> HTMLResponse:
    return render(request, "setup.html", user=context_of(request).accounts.user(operator.username))


@router.post("/account/totp")
def setup_totp(request: Request, operator: Annotated[Operator, Depends(require(None, setup=True))]) -> HTMLResponse:
    user = context_of(request).accounts.user(operator.username)
    try:
        return render(request, "setup.html", user=user, offered=actions.offer_totp(request, operator))
    except actions.ActionError as error:
        return render(request, "setup.html", status=error.status, user=user, error=error.detail)


@router.post("/account/setup")
def setup_submit(request: Request, operator: Annotated[Operator, Depends(require(None, setup=True))],  # nosec B107  # "": keep the password
                 greeting: Annotated[str, Form(max_length=100)], code: Annotated[str, Form(max_length=6)],
                 new_password: Annotated[str, Form(max_length=256)] = "") -> Response:
    try:
        actions.finish_setup(request, operator, greeting, code, new_password or None)
    except actions.ActionError as error:
        return render(request, "setup.html", status=error.status, user=context_of(request).accounts.user(operator.username),
                      error=error.detail)
    return _redirect("/")


@router.get("/account")
def account_page(request: Request, operator: Annotated[Operator, Depends(require(None))]) -> HTMLResponse:
    return render(request, "account.html", me=actions.whoami(request, operator))


@router.post("/account/greeting")
def account_greeting(request: Request, operator: Annotated[Operator, Depends(require(None))],
                     greeting: Annotated[str, Form(max_length=100)]) -> Response:
    try:
        actions.set_greeting(request, operator, greeting)
    except actions.ActionError as error:
        return render(request, "account.html", status=error.status, me=actions.whoami(request, operator), error=error.detail)
    return _redirect("/account")


@router.post("/account/password")
def account_password(request: Request, operator: Annotated[Operator, Depends(require(None))], current_password: Text,
                     new_password: Text) -> Response:
    try:
        actions.change_password(request, operator, current_password, new_password)
    except actions.ActionError as error:
        return render(request, "account.html", status=error.status, me=actions.whoami(request, operator), error=error.detail)
    return render(request, "account.html", me=actions.whoami(request, operator), notice="Password changed.")


# --- campaigns ------------------------------------------------------------------------------------------------
@router.get("/campaigns", dependencies=[Depends(require("campaigns.read"))])
def campaigns_page(request: Request) -> HTMLResponse:
    return render(request, "campaigns.html", listing=actions.campaigns(request))


@router.post("/campaigns")
def campaign_create(request: Request, operator: Annotated[Operator, Depends(require("campaigns.write"))],
                    campaign_id: Annotated[str, Form(pattern=r"^[a-z0-9_]{1,64}$")],
                    document: Annotated[str, Form(max_length=64 * 1024)]) -> Response:
    return _put_campaign(request, operator, campaign_id, document, "campaigns.html")


@router.get("/campaigns/{campaign_id}", dependencies=[Depends(require("campaigns.read"))])
async def campaign_page(request: Request, campaign_id: CampaignId) -> HTMLResponse:
    return await _campaign_page(request, campaign_id)


@router.post("/campaigns/{campaign_id}")
def campaign_update(request: Request, campaign_id: CampaignId, operator: Annotated[Operator, Depends(require("campaigns.write"))],
                    document: Annotated[str, Form(max_length=64 * 1024)]) -> Response:
    return _put_campaign(request, operator, campaign_id, document, "campaign.html")


@router.post("/campaigns/{campaign_id}/delete")
def campaign_delete(request: Request, campaign_id: CampaignId,
                    operator: Annotated[Operator, Depends(require("campaigns.write"))]) -> Response:
    try:
        actions.delete_campaign(request, operator, campaign_id)
    except actions.ActionError as error:
        return error_page(request, error.status, error.detail)
    return _redirect("/campaigns")


async def _campaign_page(request: Request, campaign_id: str, status: int = 200, **values: Any) -> HTMLResponse:
    try:
        found = actions.campaign(request, campaign_id)
    except actions.ActionError as error:
        return error_page(request, error.status, error.detail)
    try:
        uplift: dict[str, Any] | None = await actions.campaign_uplift(request, campaign_id)
    except actions.ActionError:
        uplift = None
    return render(request, "campaign.html", status=status, campaign=found, document=json.dumps(found, indent=2),
                  history=actions.campaign_history(request, campaign_id)["changes"], uplift=uplift, **values)


def _put_campaign(request: Request, operator: Operator, campaign_id: str, document: str, template: str) -> Response:
    try:
        parsed = json.loads(document)
    except ValueError as error:
        return error_page(request, 422, f"document: not JSON ({error})")
    try:
        actions.put_campaign(request, operator, campaign_id, parsed)
    except actions.ActionError as error:
        return error_page(request, error.status, error.detail)
    return _redirect(f"/campaigns/{campaign_id}")


# --- models and customers ---------------------------------------------------------------------------------------
@router.get("/models", dependencies=[Depends(require("models.read"))])
def models_page(request: Request) -> HTMLResponse:
    return render(request, "models.html", versions=actions.models(request)["models"])


@router.get("/customers", dependencies=[Depends(require("customers.read"))])
def customers_page(request: Request, customer_id: str = "") -> Response:
    if customer_id:
        if not CustomerIdPattern.fullmatch(customer_id):
            return render(request, "customers.html", status=422, error="customer_id: letters, digits, _ and -, up to 64")
        return _redirect(f"/customers/{customer_id}")
    return render(request, "customers.html")


@router.get("/customers/{customer_id}", dependencies=[Depends(require("customers.read"))])
def customer_page(request: Request, customer_id: CustomerId) -> HTMLResponse:
    try:
        return render(request, "customer.html", customer=actions.customer(request, customer_id))
    except actions.ActionError as error:
        return render(request, "customers.html", status=error.status, error=error.detail)


@router.post("/customers/{customer_id}/reveal")
def customer_reveal(request: Request, customer_id: CustomerId, operator: Annotated[Operator, Depends(require("customers.reveal"))],
                    password: Text, code: Annotated[str, Form(max_length=6)]) -> HTMLResponse:
    try:
        revealed = actions.reveal(request, operator, customer_id, "national_id", password, code)
        status, error = 200, None
    except actions.ActionError as refusal:
        revealed, status, error = None, refusal.status, refusal.detail
    try:
        record = actions.customer(request, customer_id)
    except actions.ActionError as missing:
        return error_page(request, missing.status, missing.detail)
    return render(request, "customer.html", status=status, customer=record, revealed=revealed, error=error)


# --- audit, users, system -------------------------------------------------------------------------------------
@router.get("/audit", dependencies=[Depends(require("audit.read"))])
def audit_page(request: Request, actor: str = "", customer_id: str = "", action: str = "", since: str = "",
               until: str = "", verify: bool = False) -> HTMLResponse:
    filters = {"actor": actor[:128], "customer_id": customer_id[:64], "action": action[:64], "since": since[:32],
               "until": until[:32]}
    try:
        query = AuditQuery(actor=filters["actor"] or None, customer_id=filters["customer_id"] or None,
                           action=filters["action"] or None, since=_utc(filters["since"]), until=_utc(filters["until"]))
    except actions.ActionError as error:
        return render(request, "audit.html", status=422, filters=filters, entries=[], error=error.detail.replace("expires_at", "time"))
    return render(request, "audit.html", filters=filters, entries=actions.search_audit(request, query),
                  verified=actions.verify_audit(request) if verify else None)


@router.get("/users", dependencies=[Depends(require("users.read"))])
def users_page(request: Request) -> HTMLResponse:
    return render(request, "users.html", users=actions.users(request), roles=ROLES)


@router.post("/users")
def user_create(request: Request, operator: Annotated[Operator, Depends(require("users.write"))],
                username: Annotated[str, Form(max_length=64)], role: Annotated[Role, Form()],
                expires_at: Annotated[str, Form(max_length=32)] = "") -> HTMLResponse:
    try:
        expiry = _utc(expires_at)
        created = actions.create_user(request, operator, username, {role: None if expiry is None else expiry.timestamp()})
    except actions.ActionError as error:
        return render(request, "users.html", status=error.status, users=actions.users(request), roles=ROLES, error=error.detail)
    return render(request, "users.html", users=actions.users(request), roles=ROLES, created=created)


@router.post("/users/{username}/grants")
def user_grant(request: Request, username: Username, operator: Annotated[Operator, Depends(require("users.write"))],
               role: Annotated[Role, Form()], expires_at: Annotated[str, Form(max_length=32)] = "") -> Response:
    return _user_action(request, lambda: actions.grant(request, operator, username, role, _utc(expires_at)))


@router.post("/users/{username}/grants/{role}/revoke")
def user_revoke(request: Request, username: Username, role: Role,
                operator: Annotated[Operator, Depends(require("users.write"))]) -> Response:
    return _user_action(request, lambda: actions.revoke(request, operator, username, role))


@router.post("/users/{username}/unlock")
def user_unlock(request: Request, username: Username, operator: Annotated[Operator, Depends(require("users.write"))]) -> Response:
    return _user_action(request, lambda: actions.unlock(request, operator, username))


@router.post("/users/{username}/disable")
def user_disable(request: Request, username: Username, operator: Annotated[Operator, Depends(require("users.write"))]) -> Response:
    return _user_action(request, lambda: actions.set_disabled(request, operator, username, True))


@router.post("/users/{username}/enable")
def user_enable(request: Request, username: Username, operator: Annotated[Operator, Depends(require("users.write"))]) -> Response:
    return _user_action(request, lambda: actions.set_disabled(request, operator, username, False))


@router.post("/users/{username}/password-reset")
def user_password_reset(request: Request, username: Username,
                        operator: Annotated[Operator, Depends(require("users.write"))]) -> HTMLResponse:
    try:
        created = actions.reset_password(request, operator, username)
    except actions.ActionError as error:
        return render(request, "users.html", status=error.status, users=actions.users(request), roles=ROLES, error=error.detail)
    return render(request, "users.html", users=actions.users(request), roles=ROLES, created=created)


def _user_action(request: Request, act: Any) -> Response:
    try:
        act()
    except actions.ActionError as error:
        return render(request, "users.html", status=error.status, users=actions.users(request), roles=ROLES, error=error.detail)
    return _redirect("/users")


@router.get("/system", dependencies=[Depends(require("system.read"))])
def system_page(request: Request) -> HTMLResponse:
    return render(request, "system.html", system=actions.system(request))
