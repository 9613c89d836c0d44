"""The console's JSON API under /api: the one operator API (campaigns moved here from dispatch).

Every endpoint names its permission with `require` (roles.py); a state change also needs the
CSRF token (web.py). Answers are JSON; errors are `{"error": "..."}` with the status, and
pydantic's own 422 for a body or parameter of the wrong shape.
"""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from services.console import actions
from services.console.audit import AuditQuery
from services.console.customers import REVEALABLE
from services.console.roles import ROLES
from services.console.web import CHALLENGE_COOKIE, Operator, clear_session_cookies, context_of, csrf_value, require, set_session_cookies

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "not logged in, or the session ended"},
    403: {"description": "the roles do not give the permission, the account needs setting up, or the CSRF token is wrong"},
    404: {"description": "no such item"},
    413: {"description": "request body too large"},
}
router = APIRouter(prefix="/api", responses=ERRORS)

CustomerId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
CampaignId = Annotated[str, Path(pattern=r"^[a-z0-9_]{1,64}$")]
Username = Annotated[str, Path(pattern=r"^[a-z][a-z0-9._-]{2,63}$")]
ModelName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,128}$")]
Role = Literal["admin", "marketer", "analyst", "auditor", "sre"]
assert set(ROLES) == set(Role.__args__)  # type: ignore[attr-defined]
Secret = Annotated[str, Field(min_length=1, max_length=256)]
Code = Annotated[str, Field(pattern=r"^\d{6}$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(_Body):
    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Secret


class CodeRequest(_Body):
    code: Code


class SetupRequest(_Body):
    greeting: Annotated[str, Field(min_length=1, max_length=100)]
    code: Code
    new_password: Secret | None = None


class GreetingRequest(_Body):
    greeting: Annotated[str, Field(min_length=1, max_length=100)]


class PasswordChange(_Body):
    current_password: Secret
    new_password: Secret


class RevealRequest(_Body):
    field: Literal["national_id"]
    password: Secret
    code: Code


class GrantRequest(_Body):
    role: Role
    expires_at: dt.datetime | None = None


class NewUser(_Body):
    username: Annotated[str, Field(pattern=r"^[a-z][a-z0-9._-]{2,63}$")]
    grants: Annotated[list[GrantRequest], Field(min_length=1, max_length=5)]


class GrantExpiry(_Body):
    expires_at: dt.datetime | None = None


def _error(error: actions.ActionError) -> JSONResponse:
    return JSONResponse({"error": error.detail}, status_code=error.status)


def _login_answer(request: Request, step: actions.LoginStep) -> JSONResponse:
    secure = context_of(request).settings.console_cookie_secure
    if step.kind == "challenge":
        response = JSONResponse({"status": "challenge", "challenge": "totp", "reasons": step.reasons}, status_code=202)
        response.set_cookie(CHALLENGE_COOKIE, step.challenge_token, httponly=True, secure=secure, samesite="strict",
                            path="/", max_age=300)
        return response
    response = JSONResponse({"status": "logged_in", "username": step.username, "greeting": step.greeting,
                             "setup_required": step.setup_required, "csrf_token": step.csrf_token, "flagged": step.reasons})
    set_session_cookies(response, step.session_token, step.csrf_token, secure)
    response.delete_cookie(CHALLENGE_COOKIE, path="/")
    return response


# --- session ------------------------------------------------------------------------------------------------
@router.get("/csrf", summary="The pre-login CSRF token (also in the cs_csrf cookie)")
def csrf(request: Request) -> dict[str, str]:
    return {"csrf_token": csrf_value(request)}


@router.post("/session", summary="Log in with username and password; an abnormal login is challenged (202)")
def log_in(request: Request, body: LoginRequest) -> JSONResponse:
    try:
        return _login_answer(request, actions.login(request, body.username, body.password))
    except actions.ActionError as error:
        return _error(error)


@router.post("/session/verify", summary="Answer a login challenge with the authenticator's code")
def verify(request: Request, body: CodeRequest) -> JSONResponse:
    try:
        return _login_answer(request, actions.verify_code(request, request.cookies.get(CHALLENGE_COOKIE, ""), body.code))
    except actions.ActionError as error:
        return _error(error)


@router.get("/session", summary="Who is logged in: roles, permissions, greeting")
def session(request: Request, operator: Annotated[Operator, Depends(require(None, setup=True))]) -> dict[str, Any]:
    return actions.whoami(request, operator)


@router.delete("/session", summary="Log out")
def log_out(request: Request, operator: Annotated[Operator, Depends(require(None, setup=True))]) -> JSONResponse:
    actions.logout(request, operator)
    response = JSONResponse({"status": "logged_out"})
    clear_session_cookies(response, context_of(request).settings.console_cookie_secure)
    return response


# --- one's own account ----------------------------------------------------------------------------------------
@router.post("/account/totp", summary="First login: a TOTP secret to enrol in an authenticator app")
def account_totp(request: Request, operator: Annotated[Operator, Depends(require(None, setup=True))]) -> Any:
    try:
        return actions.offer_totp(request, operator)
    except actions.ActionError as error:
        return _error(error)


@router.post("/account/setup", summary="First login: greeting, the authenticator's code, a new password")
def account_setup(request: Request, body: SetupRequest,
                  operator: Annotated[Operator, Depends(require(None, setup=True))]) -> Any:
    try:
        return actions.finish_setup(request, operator, body.greeting, body.code, body.new_password)
    except actions.ActionError as error:
        return _error(error)


@router.put("/account/greeting", summary="Change one's reserved greeting")
def account_greeting(request: Request, body: GreetingRequest, operator: Annotated[Operator, Depends(require(None))]) -> Any:
    try:
        actions.set_greeting(request, operator, body.greeting)
    except actions.ActionError as error:
        return _error(error)
    return {"status": "changed"}


@router.put("/account/password", summary="Change one's password (ends one's other sessions)")
def account_password(request: Request, body: PasswordChange, operator: Annotated[Operator, Depends(require(None))]) -> Any:
    try:
        actions.change_password(request, operator, body.current_password, body.new_password)
    except actions.ActionError as error:
        return _error(error)
    return {"status": "changed"}


# --- campaigns -------------------------------------------------------------------------------------------------
@router.get("/campaigns", summary="Every live campaign, with its source (file or console)",
            dependencies=[Depends(require("campaigns.read"))])
def list_campaigns(request: Request) -> dict[str, Any]:
    return actions.campaigns(request)


@router.get("/campaigns/{campaign_id}", summary="One campaign", dependencies=[Depends(require("campaigns.read"))])
def get_campaign(request: Request, campaign_id: CampaignId) -> Any:
    try:
        return actions.campaign(request, campaign_id)
    except actions.ActionError as error:
        return _error(error)


@router.put("/campaigns/{campaign_id}", summary="Create (201) or replace (200) a console campaign",
            responses={409: {"description": "a campaign of the campaigns file"}, 422: {"description": "invalid campaign"}})
def put_campaign(request: Request, campaign_id: CampaignId, operator: Annotated[Operator, Depends(require("campaigns.write"))],
                 document: Annotated[dict[str, Any], Body(description="one campaign, as in the campaigns file")]) -> Any:
    try:
        status, answer = actions.put_campaign(request, operator, campaign_id, document)
    except actions.ActionError as error:
        return _error(error)
    return JSONResponse(answer, status_code=status)


@router.delete("/campaigns/{campaign_id}", summary="Remove a console campaign (its history stays)",
               responses={409: {"description": "a campaign of the campaigns file"}})
def delete_campaign(request: Request, campaign_id: CampaignId,
                    operator: Annotated[Operator, Depends(require("campaigns.write"))]) -> Any:
    try:
        return actions.delete_campaign(request, operator, campaign_id)
    except actions.ActionError as error:
        return _error(error)


@router.get("/campaigns/{campaign_id}/history", summary="Every change of a campaign: what, who, when",
            dependencies=[Depends(require("campaigns.read"))])
def campaign_history(request: Request, campaign_id: CampaignId) -> dict[str, Any]:
    return actions.campaign_history(request, campaign_id)


@router.get("/campaigns/{campaign_id}/uplift", summary="Treated minus holdout response rate, with its 95% interval",
            dependencies=[Depends(require("campaigns.read"))])
async def campaign_uplift(request: Request, campaign_id: CampaignId) -> Any:
    try:
        return await actions.campaign_uplift(request, campaign_id)
    except actions.ActionError as error:
        return _error(error)


# --- models ----------------------------------------------------------------------------------------------------
@router.get("/models", summary="Every model version with its metrics, lineage and deployments",
            dependencies=[Depends(require("models.read"))])
def list_models(request: Request) -> dict[str, Any]:
    return actions.models(request)


@router.get("/models/{model_name}", summary="The versions of one model", dependencies=[Depends(require("models.read"))])
def get_model(request: Request, model_name: ModelName) -> Any:
    try:
        return actions.models(request, model_name)
    except actions.ActionError as error:
        return _error(error)


# --- customers -------------------------------------------------------------------------------------------------
@router.get("/customers/{customer_id}", summary="A customer's profile, scores, offers and responses (masked)",
            dependencies=[Depends(require("customers.read"))])
def get_customer(request: Request, customer_id: CustomerId) -> Any:
    try:
        return actions.customer(request, customer_id)
    except actions.ActionError as error:
        return _error(error)


@router.post("/customers/{customer_id}/reveal", summary=f"One personal number ({', '.join(REVEALABLE)}) in full, "
             "for this response only, after re-authentication", responses={423: {"description": "account locked"}})
def reveal(request: Request, customer_id: CustomerId, body: RevealRequest,
           operator: Annotated[Operator, Depends(require("customers.reveal"))]) -> Any:
    try:
        return actions.reveal(request, operator, customer_id, body.field, body.password, body.code)
    except actions.ActionError as error:
        return _error(error)


# --- audit -----------------------------------------------------------------------------------------------------
def _query(actor: str | None = Query(None, max_length=128), customer_id: str | None = Query(None, max_length=64),
           action: str | None = Query(None, max_length=64), since: dt.datetime | None = None,
           until: dt.datetime | None = None, limit: int = Query(200, ge=1, le=5000),
           before_seq: int | None = Query(None, ge=1)) -> AuditQuery:
    return AuditQuery(actor, customer_id, action, since, until, limit, before_seq)


@router.get("/audit", summary="Search the audit log (by user, customer, action prefix, time), newest first",
            dependencies=[Depends(require("audit.read"))])
def search_audit(request: Request, query: Annotated[AuditQuery, Depends(_query)]) -> dict[str, Any]:
    return {"entries": actions.search_audit(request, query)}


@router.get("/audit/export.csv", summary="Export the audit log search as CSV (masked)", response_class=PlainTextResponse,
            dependencies=[Depends(require("audit.export"))])
def export_audit(request: Request, query: Annotated[AuditQuery, Depends(_query)]) -> Response:
    return Response(actions.export_audit(request, query), media_type="text/csv",
                    headers={"content-disposition": 'attachment; filename="audit.csv"'})


@router.get("/audit/verify", summary="Verify the audit log's hash chain", dependencies=[Depends(require("audit.read"))])
def verify_audit(request: Request) -> dict[str, Any]:
    return actions.verify_audit(request)


# --- users -----------------------------------------------------------------------------------------------------
@router.get("/users", summary="Users, their grants and lock state", dependencies=[Depends(require("users.read"))])
def list_users(request: Request) -> dict[str, Any]:
    return {"users": actions.users(request)}


@router.post("/users", summary="Create a user; the answer carries a one-time password, shown once",
             responses={409: {"description": "the username exists"}}, status_code=201)
def create_user(request: Request, body: NewUser, operator: Annotated[Operator, Depends(require("users.write"))]) -> Any:
    roles = {g.role: (None if g.expires_at is None else actions.aware(g.expires_at).timestamp()) for g in body.grants}
    if any(expiry is not None and expiry <= context_of(request).accounts.clock() for expiry in roles.values()):
        return _error(actions.ActionError(422, "grants.expires_at: must be in the future"))
    try:
        return JSONResponse(actions.create_user(request, operator, body.username, roles), status_code=201)
    except actions.ActionError as error:
        return _error(error)


@router.put("/users/{username}/grants/{role}", summary="Grant a role, optionally until a time")
def put_grant(request: Request, username: Username, role: Role, body: GrantExpiry,
              operator: Annotated[Operator, Depends(require("users.write"))]) -> Any:
    try:
        actions.grant(request, operator, username, role, body.expires_at)
    except actions.ActionError as error:
        return _error(error)
    return {"status": "granted"}


@router.delete("/users/{username}/grants/{role}", summary="Revoke a role")
def delete_grant(request: Request, username: Username, role: Role,
                 operator: Annotated[Operator, Depends(require("users.write"))]) -> Any:
    try:
        actions.revoke(request, operator, username, role)
    except actions.ActionError as error:
        return _error(error)
    return {"status": "revoked"}


@router.post("/users/{username}/unlock", summary="Unlock an account locked by failed logins")
def unlock(request: Request, username: Username, operator: Annotated[Operator, Depends(require("users.write"))]) -> Any:
    try:
        actions.unlock(request, operator, username)
    except actions.ActionError as error:
        return _error(error)
    return {"status": "unlocked"}


@router.post("/users/{username}/disable", summary="Disable an account (ends its sessions)")
def disable(request: Request, username: Username, operator: Annotated[Operator, Depends(require("users.write"))]) -> Any:
    try:
        actions.set_disabled(request, operator, username, True)
    except actions.ActionError as error:
        return _error(error)
    return {"status": "disabled"}


@router.post("/users/{username}/enable", summary="Enable a disabled account")
def enable(request: Request, username: Username, operator: Annotated[Operator, Depends(require("users.write"))]) -> Any:
    try:
        actions.set_disabled(request, operator, username, False)
    except actions.ActionError as error:
        return _error(error)
    return {"status": "enabled"}


@router.post("/users/{username}/password-reset", summary="A new one-time password for a user (shown once)")
def password_reset(request: Request, username: Username, operator: Annotated[Operator, Depends(require("users.write"))]) -> Any:
    try:
        return actions.reset_password(request, operator, username)
    except actions.ActionError as error:
        return _error(error)


# --- the console itself -----------------------------------------------------------------------------------------
@router.get("/system", summary="The console's feed and database", dependencies=[Depends(require("system.read"))])
def system(request: Request) -> dict[str, Any]:
    return actions.system(request)
