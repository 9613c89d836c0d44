"""What every console request passes through: the caller, its session, its permission, CSRF, masking.

- `require(permission)` is the one guard of an endpoint: the request must carry a live session
  bound to this client, from a user whose unexpired grants give the permission (roles.py);
  `require(None)` asks for a live session only (one's own account, logout). A refusal is
  audited. `check_every_route_is_guarded` stops the app at start if a route has no guard and is
  not in `PUBLIC_ROUTES`, so no new route can slip through unguarded.
- CSRF: every POST, PUT, PATCH and DELETE must echo the CSRF token in `X-CSRF-Token` (or the
  `csrf_token` form field), equal to the `cs_csrf` cookie and, once logged in, to the session's
  own token (set at login). Cross-site pages can neither read the cookie nor set the header, and
  the session cookie is SameSite=Strict besides.
- `MaskingMiddleware` masks every phone, national id and card number in every text body the
  console sends (JSON, HTML, CSV), except the one value a re-authenticated reveal asked for.
- `GuardMiddleware` refuses bodies over `MAX_BODY_BYTES`, adds the security headers and
  `Cache-Control: no-store` (personal data stays out of caches), and gives a first-time client
  its pre-login CSRF cookie.
"""
from __future__ import annotations

import hmac
import json
import re
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import fastapi.routing
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders

from services.console.context import ConsoleContext
from services.console.masking import mask_personal_numbers
from services.console.sessions import Ended, SessionInfo, client_hash

SESSION_COOKIE = "cs_session"
CSRF_COOKIE = "cs_csrf"
CHALLENGE_COOKIE = "cs_challenge"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_BODY_BYTES = 256 * 1024
# Reachable without a session: logging in, the pre-login CSRF token, health, metrics, the API description.
PUBLIC_ROUTES = frozenset({
    ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/api/csrf"), ("POST", "/api/session"),
    ("POST", "/api/session/verify"), ("GET", "/login"), ("POST", "/login"), ("GET", "/login/verify"),
    ("POST", "/login/verify"),
})  # and the OpenAPI document (/openapi.json) and /static/, which are not endpoints of ours
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "cache-control": "no-store",
}
MASKED_TYPES = ("text/", "application/json")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ConsoleRefusal(Exception):
    """A request the console refuses: `kind` is login (401), setup (403), forbidden (403) or csrf (403)."""

    def __init__(self, kind: str, status: int, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.status, self.detail = kind, status, detail


@dataclass(frozen=True)
class Caller:
    address: str
    user_agent: str
    client_hash: str


@dataclass(frozen=True)
class Operator:
    """The logged-in user of a request, with the permissions in force now."""

    username: str
    roles: tuple[str, ...]
    permissions: frozenset[str]
    session: SessionInfo
    caller: Caller


def context_of(request: Request) -> ConsoleContext:
    context: ConsoleContext = request.app.state.console
    return context


def caller_of(request: Request) -> Caller:
    # The peer address as uvicorn sees it (proxy headers are not trusted: see app.py).
    address = request.client.host if request.client else "unknown"
    user_agent = request.headers.get("user-agent", "")[:256]
    return Caller(address, user_agent, client_hash(user_agent, address))


def audit(request: Request, action: str, *, actor: str | None = None, target: str = "", outcome: str = "ok",
          customer_id: str | None = None, detail: dict[str, Any] | None = None) -> None:
    """One audit entry for this request: the actor, their address and user agent."""
    caller = caller_of(request)
    operator: Operator | None = getattr(request.state, "operator", None)
    context_of(request).audit.append(actor=actor or (operator.username if operator else "anonymous"), action=action,
                                     target=target, outcome=outcome, customer_id=customer_id, address=caller.address,
                                     user_agent=caller.user_agent, detail=detail)


def operator_of(request: Request, allow_setup: bool = False) -> Operator:
    """The request's live session and what it may do; raises ConsoleRefusal("login") without one."""
    operator: Operator | None = getattr(request.state, "operator", None)
    if operator is None:
        operator = _resolve(request)
        request.state.operator = operator
    if operator.session.state == "setup" and not allow_setup:
        raise ConsoleRefusal("setup", 403, "finish setting up your account first (/account/setup)")
    return operator


def _resolve(request: Request) -> Operator:
    context = context_of(request)
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise ConsoleRefusal("login", 401, "log in first")
    caller = caller_of(request)
    resolved = context.sessions.resolve(token, caller.client_hash)
    if isinstance(resolved, Ended):
        # A cookie replayed from elsewhere, after logout or expiry, or forged: each is audited.
        if resolved.reason in ("client_changed", "expired", "ended", "unknown"):
            audit(request, f"session.{resolved.reason}", actor=resolved.username or "anonymous", outcome="denied",
                  target=f"{request.method} {request.url.path}")
        raise ConsoleRefusal("login", 401, "your session has ended: log in again" if resolved.username else "log in first")
    roles, permissions = context.accounts.permissions(resolved.username)
    user = context.accounts.user(resolved.username)
    if user is None or user.disabled:
        context.sessions.end(resolved.token_hash, "disabled")
        raise ConsoleRefusal("login", 401, "your account is disabled")
    return Operator(resolved.username, roles, permissions, resolved, caller)


def require(permission: str | None, *, setup: bool = False) -> Callable[[Request], Operator]:
    """The guard of one endpoint: a live session (and, unless None, the named permission)."""

    def guard(request: Request) -> Operator:
        operator = operator_of(request, allow_setup=setup)
        if permission is not None and permission not in operator.permissions:
            audit(request, "access.denied", target=f"{request.method} {request.url.path}", outcome="denied",
                  detail={"permission": permission, "roles": list(operator.roles)})
            raise ConsoleRefusal("forbidden", 403, f"your roles do not give {permission!r}")
        return operator

    guard.permission = permission  # type: ignore[attr-defined]
    guard.allows_setup = setup  # type: ignore[attr-defined]
    return guard


def guard_of(route: APIRoute) -> Callable[..., Any] | None:
    """The `require` guard among a route's dependencies, or None (then it must be public)."""
    todo = list(route.dependant.dependencies)
    while todo:
        dependency = todo.pop()
        if dependency.call is not None and hasattr(dependency.call, "permission"):
            return dependency.call
        todo += dependency.dependencies
    return None


def console_routes(app: FastAPI) -> list[tuple[str, str, APIRoute]]:
    """(method, full path, route) of every endpoint, those of included routers too."""
    flattened: list[tuple[str, str, APIRoute]] = []
    for context in fastapi.routing.iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            flattened += [(method, str(context.path), route) for method in sorted(context.methods or route.methods)]
    return flattened


def check_every_route_is_guarded(app: FastAPI) -> None:
    unguarded = sorted(f"{method} {path}" for method, path, route in console_routes(app)
                       if guard_of(route) is None and (method, path) not in PUBLIC_ROUTES)
    if unguarded:
        raise AssertionError(f"console routes without a permission guard: {unguarded}")


def csrf_value(request: Request) -> str:
    """The CSRF token a page embeds in its forms: the session's, else the client's pre-login one."""
    operator: Operator | None = getattr(request.state, "operator", None)
    if operator is not None:
        return operator.session.csrf_token
    return request.cookies.get(CSRF_COOKIE) or request.state.preset_csrf


async def csrf_protect(request: Request) -> None:
    """App-wide dependency: a state change must echo the CSRF token (see the module docstring)."""
    if request.method in SAFE_METHODS:
        return
    given = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    if given is None and content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        field = (await request.form()).get(CSRF_FIELD)
        given = field if isinstance(field, str) else None
    cookie = request.cookies.get(CSRF_COOKIE)
    operator: Operator | None = None
    if request.cookies.get(SESSION_COOKIE):
        try:
            operator = await run_in_threadpool(operator_of, request, True)
        except ConsoleRefusal:
            operator = None  # no live session: the route's guard answers (a login route needs none)
    # Logged in: the session's own token; before: the client's pre-login cookie (double submit).
    expected = operator.session.csrf_token if operator is not None else cookie
    valid = bool(given and cookie and expected and hmac.compare_digest(given.encode(), cookie.encode())
                 and hmac.compare_digest(given.encode(), expected.encode()))
    if not valid:
        await run_in_threadpool(audit, request, "csrf.refused", target=f"{request.method} {request.url.path}",
                                outcome="denied")
        raise ConsoleRefusal("csrf", 403, f"missing or wrong CSRF token (send the {CSRF_COOKIE} cookie's value in {CSRF_HEADER})")


def set_session_cookies(response: Any, token: str, csrf_token: str, secure: bool) -> None:
    response.set_cookie(SESSION_COOKIE, token, httponly=True, secure=secure, samesite="strict", path="/")
    response.set_cookie(CSRF_COOKIE, csrf_token, httponly=False, secure=secure, samesite="strict", path="/")


def clear_session_cookies(response: Any, secure: bool) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", secure=secure, httponly=True, samesite="strict")
    response.set_cookie(CSRF_COOKIE, secrets.token_urlsafe(32), httponly=False, secure=secure, samesite="strict", path="/")


class MaskingMiddleware:
    """Masks personal numbers in every text response body (see masking.py), but `scope["state"]["reveal"]`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def masking_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            headers = MutableHeaders(raw=start["headers"])
            if headers.get("content-type", "").startswith(MASKED_TYPES):
                keep = scope.get("state", {}).get("reveal", ())
                body = mask_personal_numbers(body.decode("utf-8", errors="replace"), keep).encode()
                headers["content-length"] = str(len(body))
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, masking_send)


class GuardMiddleware:
    """Body size limit, security headers, and a pre-login CSRF cookie for a first-time client."""

    def __init__(self, app: ASGIApp, secure_cookies: bool) -> None:
        self.app = app
        self.secure_cookies = secure_cookies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode().lower(): value.decode() for key, value in scope["headers"]}
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            await _refuse(send, 413, f"request body over {MAX_BODY_BYTES} bytes" if length.isdigit() else "bad Content-Length",
                          scope, headers)
            return
        if traverses(scope.get("raw_path") or scope["path"].encode()):
            await _refuse(send, 400, "a path may not climb out of its folder (..)", scope, headers)
            return
        has_csrf_cookie = f"{CSRF_COOKIE}=" in headers.get("cookie", "")
        preset = secrets.token_urlsafe(32)
        scope.setdefault("state", {})["preset_csrf"] = preset
        received = 0
        overrun = False

        async def limited_receive() -> Message:
            nonlocal received, overrun
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:  # chunked bodies carry no Content-Length
                overrun = True
                raise ConsoleRefusal("too_large", 413, f"request body over {MAX_BODY_BYTES} bytes")
            return message

        async def guarded_send(message: Message) -> None:
            if overrun:  # FastAPI answers a body it could not read with its own 400: ours is the answer
                if message["type"] == "http.response.start":
                    await _refuse(send, 413, f"request body over {MAX_BODY_BYTES} bytes", scope, headers)
                return
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(raw=message["headers"])
                for name, value in SECURITY_HEADERS.items():
                    response_headers.setdefault(name, value)
                sets_csrf = any(value.startswith(f"{CSRF_COOKIE}=") for value in response_headers.getlist("set-cookie"))
                if not has_csrf_cookie and not sets_csrf:
                    secure = "; Secure" if self.secure_cookies else ""
                    response_headers.append("set-cookie", f"{CSRF_COOKIE}={preset}; Path=/; SameSite=Strict{secure}")
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except ConsoleRefusal as refusal:
            await _refuse(send, refusal.status, refusal.detail, scope, headers)


_TRAVERSAL = re.compile(r"(?:^|[/\\])\.\.(?:[/\\]|$)")


def traverses(raw_path: bytes) -> bool:
    """Whether a request path climbs out of its folder, however its dots and slashes are encoded.

    >>> traverses(b"/static/console.css"), traverses(b"/static/..%2f..%2fetc/passwd"), traverses(b"/s/%252e%252e/x")
    (False, True, True)
    """
    path = raw_path.decode("latin-1")
    for _ in range(3):  # double and triple encoding: %252e is %2e is .
        path = urllib.parse.unquote(path)
    return bool(_TRAVERSAL.search(path))


async def _refuse(send: Send, status: int, detail: str, scope: Scope | None = None,
                  headers: dict[str, str] | None = None) -> None:
    """Answer a request the guard stops before any route and, given the request, audit the refusal."""
    if scope is not None and headers is not None:
        context: ConsoleContext = scope["app"].state.console
        client = scope.get("client") or ("", 0)
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")[:512]
        await run_in_threadpool(context.audit.append, actor="anonymous", action="request.refused", outcome="denied",
                                target=f"{scope['method']} {path}", address=client[0],
                                user_agent=headers.get("user-agent", "")[:256], detail={"status": status, "reason": detail})
    body = json.dumps({"error": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *((name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items())]})
    await send({"type": "http.response.body", "body": body})
