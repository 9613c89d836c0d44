"""dispatch: scores in, at most one offer per customer, campaign and window out, or a reason why not."""
from __future__ import annotations

from services.core.kafka import Stage, avro_decoder
from services.core.messages import CustomerScores, OfferResponse
from services.core.service import ServiceContext, bootstrap, main
from services.dispatch.campaigns import ContactRules, load_campaign_file
from services.dispatch.contact_policy import Caps, ContactPolicy
from services.dispatch.dispatcher import Dispatcher
from services.dispatch.topics import RESPONSES, SCORES

SERVICE = "dispatch"


def caps(rules: ContactRules, override: int | None = None) -> Caps:
    """The file's caps; a configured override (load tests) lifts every customer cap to it."""
    if override is None:
        return Caps(rules.daily_cap, rules.weekly_cap, rules.channel_daily_cap, rules.channel_weekly_cap)
    return Caps(override, max(override, rules.weekly_cap), override, max(override, rules.channel_weekly_cap))


def build() -> ServiceContext:
    context = bootstrap(SERVICE, needs_redis=True)
    assert context.redis is not None
    settings = context.settings
    campaign_file = load_campaign_file(settings.campaigns_file)
    policy = ContactPolicy(context.redis, settings.redis_key_prefix, caps(campaign_file.contact_rules,
                                                                           settings.max_offers_per_customer_per_day))
    dispatcher = Dispatcher(policy, campaign_file.campaigns, campaign_file.contact_rules, settings.quiet_hours)
    context.add_stage(Stage(SERVICE, SCORES, avro_decoder(context.codec, CustomerScores), dispatcher.decide,
                            context.publisher, context.dead_letters, after_flush=dispatcher.after_flush))
    context.add_stage(Stage(SERVICE, RESPONSES, avro_decoder(context.codec, OfferResponse), dispatcher.learn_responses,
                            context.publisher, context.dead_letters))
    return context


if __name__ == "__main__":
    main(build)
