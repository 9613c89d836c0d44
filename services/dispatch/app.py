"""dispatch: scores in, at most one offer per customer, campaign and window out, or a reason why not.
Reloads campaigns live (the file's, and the console's in SQL: services/campaigns/)."""
from __future__ import annotations

import asyncio

from services.campaigns.catalog import CampaignCatalog
from services.campaigns.definitions import ContactRules
from services.campaigns.store import CampaignStore
from services.core import metrics
from services.core.kafka import Stage, avro_decoder
from services.core.service import ServiceContext, bootstrap, main
from services.dispatch.contact_policy import Caps, ContactPolicy
from services.dispatch.dispatcher import Dispatcher
from services.dispatch.topics import RESPONSES, SCORES
from services.protocol.stream_messages import CustomerScores, OfferResponse

SERVICE = "dispatch"


def caps(rules: ContactRules, override: int | None = None) -> Caps:
    """The file's caps; a configured override (load tests) lifts every customer cap to it."""
    if override is None:
        return Caps(rules.daily_cap, rules.weekly_cap, rules.channel_daily_cap, rules.channel_weekly_cap)
    return Caps(override, max(override, rules.weekly_cap), override, max(override, rules.channel_weekly_cap))


def build() -> ServiceContext:
    context = bootstrap(SERVICE, needs_redis=True, needs_database=True)
    assert context.redis is not None
    settings = context.settings
    catalog = CampaignCatalog(settings.campaigns_file, CampaignStore(settings.database_url.get_secret_value()))
    policy = ContactPolicy(context.redis, settings.redis_key_prefix, Caps(0, 0, 0, 0))
    dispatcher = Dispatcher(policy, (), quiet_hours=settings.quiet_hours)

    def apply_live_campaigns() -> None:
        """On the event loop: decide reads these fields before its first await, so a batch sees one set."""
        live = catalog.live
        dispatcher.campaigns = live.campaigns
        dispatcher.rules = live.campaign_file.contact_rules
        dispatcher.weights = live.campaign_file.arbitration
        policy.caps = caps(live.campaign_file.contact_rules, settings.max_offers_per_customer_per_day)
        metrics.LIVE_CAMPAIGNS.labels("file").set(len(live.campaign_file.campaigns))
        metrics.LIVE_CAMPAIGNS.labels("console").set(len(live.console))

    async def reload_campaigns() -> None:
        """Read the sources in a thread (SQL, file); swap on the event loop, where decide runs."""
        if await asyncio.to_thread(catalog.refresh):
            apply_live_campaigns()

    apply_live_campaigns()
    context.app.timer(settings.campaign_refresh_s)(reload_campaigns)

    context.add_stage(Stage(SERVICE, SCORES, avro_decoder(context.codec, CustomerScores), dispatcher.decide,
                            context.publisher, context.dead_letters, take_confirmation=dispatcher.take_confirmation))
    context.add_stage(Stage(SERVICE, RESPONSES, avro_decoder(context.codec, OfferResponse), dispatcher.learn_responses,
                            context.publisher, context.dead_letters))
    return context


if __name__ == "__main__":
    main(build)
