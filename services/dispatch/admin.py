"""What the command line asks of dispatch: the suppression list, the live campaigns, uplift.

Each function takes the settings, opens the Redis or SQL connection it needs and closes it again,
so `cipherstream suppress`, `campaigns list` and `uplift` read exactly what dispatch decides with.
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import redis.asyncio as aioredis

from services.campaigns.catalog import CampaignCatalog, LiveCampaigns
from services.campaigns.definitions import Campaign
from services.campaigns.store import CampaignStore
from services.campaigns.uplift import Uplift, uplift
from services.core.config import Settings
from services.dispatch.contact_policy import Caps, ContactPolicy

# The suppression list is read and written without the caps, which only decide offers.
NO_CAPS = Caps(0, 0, 0, 0)
EVERY_CAMPAIGN = "*"


@contextlib.asynccontextmanager
async def _contact_policy(settings: Settings) -> AsyncIterator[ContactPolicy]:
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    try:
        yield ContactPolicy(redis, settings.redis_key_prefix, NO_CAPS)
    finally:
        await redis.aclose()


async def suppress(settings: Settings, customer_id: str, campaign_id: str = EVERY_CAMPAIGN) -> None:
    """Never contact the customer for the campaign (`*`: for any) from dispatch's next decision on."""
    async with _contact_policy(settings) as policy:
        await policy.suppress(customer_id, campaign_id)


async def unsuppress(settings: Settings, customer_id: str, campaign_id: str = EVERY_CAMPAIGN) -> None:
    """Take the campaign (or `*`) off the customer's suppression list."""
    async with _contact_policy(settings) as policy:
        await policy.unsuppress(customer_id, campaign_id)


async def suppressions_of(settings: Settings, customer_id: str) -> set[str]:
    """The campaign ids (and `*`) the customer is suppressed for."""
    async with _contact_policy(settings) as policy:
        return await policy.suppressions_of(customer_id)


def live_campaigns(settings: Settings) -> LiveCampaigns:
    """The campaigns dispatch runs: CIPHERSTREAM_CAMPAIGNS_FILE's plus the console's (DATABASE_URL).
    A bad campaigns file is a ConfigError naming it, as it stops dispatch at start."""
    store = CampaignStore(settings.database_url.get_secret_value())
    try:
        return CampaignCatalog(settings.campaigns_file, store).live
    finally:
        store.close()


async def uplift_reports(settings: Settings, campaigns: Sequence[Campaign]) -> list[Uplift]:
    """Treated and holdout sizes, conversions and uplift with its 95% interval, per campaign, in order."""
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    try:
        return [await uplift(redis, settings.redis_key_prefix, campaign.campaign_id) for campaign in campaigns]
    finally:
        await redis.aclose()
