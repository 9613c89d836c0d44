"""scoring: customer events in, one propensity per product out; responses teach the models.

Every replica scores (two stages in the scoring group); the one holding the lease `lease.scoring`
also learns from responses (learner.py), and every replica serves the versions it registers."""
from __future__ import annotations

from services.core.config import load_settings
from services.core.kafka import Stage, avro_decoder, tombstone_decoder
from services.core.lease import run_while_active
from services.core.service import ServiceContext, bootstrap, main
from services.models.registry import ModelRegistry
from services.protocol.stream_messages import CustomerEvent, CustomerProfile
from services.scoring.avro_writer import FAST_WRITERS
from services.scoring.learner import Learner
from services.scoring.scorer import Scorer
from services.scoring.topics import CUSTOMER_EVENTS, CUSTOMER_PROFILES

SERVICE = "scoring"


def build() -> ServiceContext:
    settings = load_settings()
    # The stages never write an exchange topic (only the learner talks to the partner, on clients of
    # its own), so each batch stays one Kafka transaction where the exchange is a cluster of its own.
    context = bootstrap(SERVICE, needs_redis=True, needs_database=True, fast_writers=FAST_WRITERS,
                        settings=settings.model_copy(update={"exchange_bootstrap_servers": None}))
    assert context.redis is not None
    registry = ModelRegistry(settings.database_url.get_secret_value())
    scorer = Scorer.start(context.redis, settings.redis_key_prefix, registry, model_refresh_s=settings.model_refresh_s,
                          secureboost_products=tuple(p for p in settings.secureboost_products.split(",") if p))
    for topic, decoder, handler in (
        (CUSTOMER_PROFILES, tombstone_decoder(context.codec, CustomerProfile), scorer.store_profiles),
        (CUSTOMER_EVENTS, avro_decoder(context.codec, CustomerEvent), scorer.score),
    ):
        context.add_stage(Stage(SERVICE, topic, decoder, handler, context.publisher, context.dead_letters))
    learner = Learner(settings, context.codec, context.redis, registry)

    @context.app.task
    async def learn() -> None:
        await run_while_active(settings, SERVICE, learner.run)

    return context


if __name__ == "__main__":
    main(build)
