"""scoring: customer events in, one propensity per product out; responses teach the models."""
from __future__ import annotations

from services.core.kafka import Stage, avro_decoder, tombstone_decoder
from services.core.service import ServiceContext, bootstrap, main
from services.models.registry import ModelRegistry
from services.protocol.stream_messages import CustomerEvent, CustomerProfile, OfferResponse
from services.scoring.avro_writer import FAST_WRITERS
from services.scoring.scorer import Scorer
from services.scoring.topics import CUSTOMER_EVENTS, CUSTOMER_PROFILES, RESPONSES

SERVICE = "scoring"


def build() -> ServiceContext:
    context = bootstrap(SERVICE, needs_redis=True, needs_database=True, fast_writers=FAST_WRITERS)
    assert context.redis is not None
    registry = ModelRegistry(context.settings.database_url.get_secret_value())
    scorer = Scorer.start(context.redis, context.settings.redis_key_prefix, registry,
                          model_refresh_s=context.settings.model_refresh_s,
                          secureboost_products=tuple(p for p in context.settings.secureboost_products.split(",") if p))
    for topic, decoder, handler in (
        (CUSTOMER_PROFILES, tombstone_decoder(context.codec, CustomerProfile), scorer.store_profiles),
        (CUSTOMER_EVENTS, avro_decoder(context.codec, CustomerEvent), scorer.score),
        (RESPONSES, avro_decoder(context.codec, OfferResponse), scorer.learn),
    ):
        context.add_stage(Stage(SERVICE, topic, decoder, handler, context.publisher, context.dead_letters))
    return context


if __name__ == "__main__":
    main(build)
