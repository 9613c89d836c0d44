"""dispatch: scores in, at most one offer per customer, campaign and window out, or a reason why not."""
from __future__ import annotations

from services.core.kafka import Stage, avro_decoder
from services.core.messages import CustomerScores
from services.core.service import ServiceContext, bootstrap, main
from services.dispatch.campaigns import load_campaigns
from services.dispatch.contact_policy import ContactPolicy
from services.dispatch.dispatcher import Dispatcher
from services.dispatch.topics import SCORES

SERVICE = "dispatch"


def build() -> ServiceContext:
    context = bootstrap(SERVICE, needs_redis=True)
    assert context.redis is not None
    settings = context.settings
    policy = ContactPolicy(context.redis, settings.redis_key_prefix, daily_cap=settings.max_offers_per_customer_per_day)
    dispatcher = Dispatcher(policy, load_campaigns(settings.campaigns_file))
    context.add_stage(Stage(SERVICE, SCORES, avro_decoder(context.codec, CustomerScores), dispatcher.decide,
                            context.publisher, context.dead_letters, after_flush=dispatcher.after_flush))
    return context


if __name__ == "__main__":
    main(build)
