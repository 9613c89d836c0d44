"""The console API for campaigns, served by the dispatch service's web server (JSON over HTTP).

    GET    /api/campaigns                    every live campaign, with its source (file or console)
    GET    /api/campaigns/{id}               one campaign
    PUT    /api/campaigns/{id}               create or replace a console campaign (the file's schema)
    DELETE /api/campaigns/{id}               remove a console campaign
    GET    /api/campaigns/{id}/history       every change: what, who, when
    GET    /api/campaigns/{id}/uplift        treatment minus holdout response rate, with its 95% interval

Every request carries `Authorization: Bearer <CIPHERSTREAM_CONSOLE_TOKEN>`; without a configured
token the API is off (503). Writes name their author in `X-Cipherstream-Actor` (recorded in the
change history). A bad campaign is refused with 422 and the fields at fault, as the file loader
names them; a file-managed id with 409. A change is live in this worker at once and in every
other dispatch worker within `campaign_refresh_s`.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import pydantic
from faust.web import Request, Response, View

from services.dispatch.campaign_catalog import CampaignCatalog
from services.dispatch.campaigns import Campaign, validation_problems
from services.dispatch.uplift import uplift

ACTOR_HEADER = "X-Cipherstream-Actor"
ACTOR_PATTERN = re.compile(r"^[\w.@-]{1,128}$")


class ConsoleApi:
    """Registers the campaign views on a faust app; `on_change` applies a change to this worker."""

    def __init__(self, app: faust.App, catalog: CampaignCatalog, token: str | None, redis: Any, key_prefix: str,
                 on_change: Callable[[], Awaitable[None]]) -> None:
        self.catalog, self.token, self.redis, self.key_prefix, self.on_change = catalog, token, redis, key_prefix, on_change
        api = self

        class Collection(View):
            async def get(self, request: Request) -> Response:
                return api.guarded(self, request, None) or self.json(
                    {"campaigns": [api.described(c) for c in api.catalog.live.campaigns],
                     "revision": api.catalog.live.version[1]})

        class Item(View):
            async def get(self, request: Request, campaign_id: str) -> Response:
                refused = api.guarded(self, request, None)
                if refused:
                    return refused
                found = next((c for c in api.catalog.live.campaigns if c.campaign_id == campaign_id), None)
                return self.json(api.described(found)) if found else api.error(self, 404, f"no campaign {campaign_id!r}")

            async def put(self, request: Request, campaign_id: str) -> Response:
                actor, refused = api.write_guarded(self, request, campaign_id)
                if refused:
                    return refused
                try:
                    document = json.loads(await request.read())
                except ValueError as exc:
                    return api.error(self, 400, f"body is not JSON: {exc}")
                if not isinstance(document, dict):
                    return api.error(self, 422, "body must be a JSON object (one campaign)")
                if document.setdefault("campaign_id", campaign_id) != campaign_id:
                    return api.error(self, 422, "campaign_id in the body differs from the one in the path")
                try:
                    campaign = Campaign.model_validate(document)
                except pydantic.ValidationError as exc:
                    return api.error(self, 422, f"invalid campaign: {validation_problems(exc)}")
                change = await asyncio.to_thread(api.catalog.store.put, campaign, actor)
                await api.on_change()
                return self.json({"campaign": campaign.model_dump(mode="json"), "action": change.action,
                                  "revision": change.revision}, status=201 if change.action == "created" else 200)

            async def delete(self, request: Request, campaign_id: str) -> Response:
                actor, refused = api.write_guarded(self, request, campaign_id)
                if refused:
                    return refused
                change = await asyncio.to_thread(api.catalog.store.delete, campaign_id, actor)
                if change is None:
                    return api.error(self, 404, f"no console campaign {campaign_id!r}")
                await api.on_change()
                return self.json({"action": change.action, "revision": change.revision})

        class History(View):
            async def get(self, request: Request, campaign_id: str) -> Response:
                refused = api.guarded(self, request, None)
                if refused:
                    return refused
                changes = await asyncio.to_thread(api.catalog.store.history, campaign_id)
                return self.json({"campaign_id": campaign_id, "changes": [
                    {"revision": c.revision, "action": c.action, "actor": c.actor,
                     "changed_at": c.changed_at.isoformat(), "document": c.document} for c in changes]})

        class Uplift(View):
            async def get(self, request: Request, campaign_id: str) -> Response:
                refused = api.guarded(self, request, None)
                if refused:
                    return refused
                report = await uplift(api.redis, api.key_prefix, campaign_id)
                return self.json({key: (None if isinstance(value, float) and math.isnan(value) else value)
                                  for key, value in vars(report).items()})

        app.page("/api/campaigns", name="campaigns")(Collection)
        app.page("/api/campaigns/{campaign_id}", name="campaign")(Item)
        app.page("/api/campaigns/{campaign_id}/history", name="campaign_history")(History)
        app.page("/api/campaigns/{campaign_id}/uplift", name="campaign_uplift")(Uplift)

    def guarded(self, view: View, request: Request, actor: str | None) -> Response | None:
        """None when the request may go on, else the refusal (API off, no or wrong token, no actor on a write)."""
        if not self.token:
            return self.error(view, 503, "the console API is off: set CIPHERSTREAM_CONSOLE_TOKEN")
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            return self.error(view, 401, "missing or wrong bearer token")
        if actor is not None and not ACTOR_PATTERN.match(actor):
            return self.error(view, 400, f"a write names its author in the {ACTOR_HEADER} header (letters, digits, . @ - _)")
        return None

    def write_guarded(self, view: View, request: Request, campaign_id: str) -> tuple[str, Response | None]:
        """The author of a write, and its refusal if any (as `guarded`, plus 409 for a file campaign)."""
        actor = request.headers.get(ACTOR_HEADER, "")
        refused = self.guarded(view, request, actor)
        if refused is None and campaign_id in self.catalog.live.file_ids:
            refused = self.error(view, 409, f"campaign {campaign_id!r} is defined in the campaigns file; change it there")
        return actor, refused

    def described(self, campaign: Campaign) -> dict[str, Any]:
        source = "file" if campaign.campaign_id in self.catalog.live.file_ids else "console"
        return campaign.model_dump(mode="json") | {"source": source}

    @staticmethod
    def error(view: View, status: int, detail: str) -> Response:
        return view.json({"error": detail}, status=status)
