"""console: the bank's operator console, a FastAPI app under uvicorn (the one operator API and its pages).

Reads `customer.profiles`, `customer.identities`, `scores`, `offers.<channel>` and `responses`
into its own customer view (customers.py) with the stage runner, like every service; serves the
JSON API (api.py, OpenAPI at /openapi.json) and server-rendered pages (pages.py) behind accounts,
roles, CSRF and masking (web.py), and appends every access to personal data and every security or
admin action to the audit log (audit.py). `/healthz`, `/readyz` and `/metrics` as every service.

Why FastAPI and not faust's web server: the console is request/response work with forms,
cookies, validation and an OpenAPI document, which FastAPI gives and tests well; the feed is the
stage runner, started and stopped with the app (its lifespan), so one process is one replica.
Proxy headers are not trusted (`proxy_headers=False`): the address a session is bound to and the
audit log records is the peer's, which a client cannot forge with an X-Forwarded-For header.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import prometheus_client
import redis.asyncio as aioredis
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from services.console import api, pages
from services.console.context import ConsoleContext
from services.console.customers import CustomerView
from services.console.masking import install_log_filter
from services.console.topics import CUSTOMER_IDENTITIES, CUSTOMER_PROFILES, OFFERS, RESPONSES, SCORES
from services.console.web import ConsoleRefusal, GuardMiddleware, MaskingMiddleware, check_every_route_is_guarded, csrf_protect
from services.core.avro import AvroCodec, SchemaRegistryClient, SchemaStore
from services.core.config import Settings, load_settings
from services.core.errors import CipherstreamError
from services.core.kafka import DeadLetters, Publisher, Stage, StageRunner, avro_decoder, tombstone_decoder
from services.core.logs import facts, setup_logging
from services.core.runtime import check_database, check_kafka
from services.core.telemetry import setup_tracing
from services.protocol.stream_messages import CustomerIdentity, CustomerProfile, CustomerScores, Offer, OfferResponse

SERVICE = "console"
STATIC_DIR = Path(__file__).parent / "static"
log = logging.getLogger(__name__)


def feed(settings: Settings, customers: CustomerView) -> StageRunner:
    """The stage runner that keeps the customer view: one stage per topic, writing only dead letters."""
    registry = SchemaRegistryClient(settings.schema_registry_url) if settings.schema_registry_url else None
    codec = AvroCodec(SchemaStore(settings.schema_dir, registry))
    publisher = Publisher(settings, codec, SERVICE)  # dead letters only: no transaction
    dead_letters = DeadLetters(publisher, SERVICE)
    runner = StageRunner(settings, SERVICE, publisher)
    stages: list[tuple[str, Any, Any]] = [
        (CUSTOMER_PROFILES, tombstone_decoder(codec, CustomerProfile), customers.feed_profiles),
        (CUSTOMER_IDENTITIES, tombstone_decoder(codec, CustomerIdentity), customers.feed_identities),
        (SCORES, avro_decoder(codec, CustomerScores), customers.feed_scores),
        *((topic, avro_decoder(codec, Offer), customers.feed_offers) for topic in OFFERS),
        (RESPONSES, avro_decoder(codec, OfferResponse), customers.feed_responses),
    ]
    for topic, decode, handle in stages:
        runner.add(Stage(SERVICE, topic, decode, handle, publisher, dead_letters))
    return runner


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    context: ConsoleContext = app.state.console
    settings = context.settings
    context.redis = aioredis.from_url(settings.redis_url.get_secret_value(), socket_timeout=settings.redis_timeout_s,
                                      socket_connect_timeout=settings.redis_timeout_s)
    runner = feed(settings, context.customers) if settings.console_feed else None
    if runner is not None:
        await runner.start()
        context.runner = runner
    log.info("service started", extra=facts(service=SERVICE, feed=runner is not None))
    try:
        yield
    finally:
        if runner is not None:
            await runner.stop()
            context.runner = None
        await context.redis.aclose()
        context.redis = None


def create_app(context: ConsoleContext) -> FastAPI:
    app = FastAPI(title="Cipherstream console", version="1", openapi_url="/openapi.json", docs_url=None, redoc_url=None,
                  swagger_ui_oauth2_redirect_url=None, dependencies=[Depends(csrf_protect)], lifespan=lifespan,
                  description="The bank's operator console: campaigns, models, customers (masked), the audit log, "
                              "users and roles. Log in with POST /api/session; send the cs_csrf cookie's value "
                              "as X-CSRF-Token on every POST, PUT and DELETE.")
    app.state.console = context
    app.include_router(api.router)
    app.include_router(pages.router)
    _add_health(app, context)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        # FastAPI's own 422 echoes each bad input back, and one that cannot be encoded (a lone
        # surrogate in a login name) made it a 500: say where and what, as the schema does, not the input.
        problems = [{"loc": list(problem.get("loc", ())), "msg": problem.get("msg", ""), "type": problem.get("type", "")}
                    for problem in error.errors()]
        return JSONResponse({"detail": problems}, status_code=422)

    @app.exception_handler(ConsoleRefusal)
    async def refused(request: Request, refusal: ConsoleRefusal) -> Response:
        if request.url.path.startswith("/api/") or refusal.kind == "too_large":
            return JSONResponse({"error": refusal.detail}, status_code=refusal.status)
        if refusal.kind == "login":
            return RedirectResponse("/login", status_code=303)
        if refusal.kind == "setup":
            return RedirectResponse("/account/setup", status_code=303)
        return pages.error_page(request, refusal.status, refusal.detail)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # The last added is the outermost: the guard sees the request first, masking sees every body last.
    app.add_middleware(MaskingMiddleware)
    app.add_middleware(GuardMiddleware, secure_cookies=context.settings.console_cookie_secure)
    check_every_route_is_guarded(app)
    return app


def _add_health(app: FastAPI, context: ConsoleContext) -> None:
    @app.get("/healthz", include_in_schema=True, summary="The process answers")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "service": SERVICE}

    @app.get("/readyz", summary="The database answers and the feed has its partitions")
    def readyz() -> JSONResponse:
        try:
            with context.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            database = True
        except SQLAlchemyError:
            database = False
        runner = context.runner
        feed_ready = not context.settings.console_feed or bool(
            runner is not None and runner.assigned and not runner.degraded and runner.brokers_reachable)
        ready = database and feed_ready
        return JSONResponse({"ready": ready, "database": database, "feed": feed_ready}, status_code=200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def metrics() -> Response:
        return Response(prometheus_client.generate_latest(), media_type="text/plain")


def build(settings: Settings | None = None) -> tuple[FastAPI, Settings]:
    """Settings, logs and tracing, every part checked to answer, then the app."""
    settings = settings or load_settings()
    setup_logging(SERVICE, settings.log_level)
    install_log_filter()
    setup_tracing(SERVICE)
    check_database(settings.database_url.get_secret_value())
    # Redis (dispatch's uplift sets) is not checked: without it only the uplift figures are missing (503).
    if settings.console_feed:
        asyncio.run(check_kafka(settings.kafka_bootstrap_servers))
    return create_app(ConsoleContext.open(settings)), settings


def main() -> None:
    """`python -m services.console.app [worker]`: serve until SIGTERM ("worker" is accepted as for every service)."""
    try:
        app, settings = build()
    except CipherstreamError as error:
        logging.basicConfig()
        log.error("service failed to start: %s", error)
        raise SystemExit(2) from error
    # A pod listens on its own address; the NetworkPolicy chooses who may call it.
    uvicorn.run(app, host="0.0.0.0", port=settings.web_port,  # nosec B104  # see the line above
                log_config=None, proxy_headers=False, server_header=False, access_log=True, timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
