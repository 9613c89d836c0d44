"""Scoring's two stage handlers: keep profiles, score events for every product. (Learning from
responses is the learner's, `learner.py`: one replica learns, every replica serves.)

The work is split three ways: the Redis state (`state.py`), the models being served
(`live_models.py`) and the scoring of a batch itself, a pure function (`batch_scoring.py`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from services.core.kafka import HandlerResult, Inbound, Outbound, now_ms
from services.models.bank_features import PRODUCTS
from services.models.registry import ModelRegistry
from services.models.secureboost.serving import LiveSecureBoost, load_secureboost
from services.protocol.stream_messages import CustomerEvent, CustomerProfile
from services.scoring.batch_scoring import score_batch
from services.scoring.live_models import FEDERATED_REFRESH_S, LiveModels
from services.scoring.secureboost_scoring import apply_secureboost
from services.scoring.state import PartialScoresOf, ScoringState
from services.scoring.styles import CHECKPOINT_EVERY_S, LiveStyles
from services.scoring.topics import SCORES

UNKNOWN_SEGMENT = "unknown"


def unknown_profile(customer_id: str) -> CustomerProfile:
    """What we score with before the customer's profile arrives: no consent, so no offer is made."""
    return CustomerProfile(customer_id, 0, 0, 0, 0, (), UNKNOWN_SEGMENT, "sms", "UTC", False, 0)


@dataclass
class Scorer:
    state: ScoringState
    models: LiveModels
    styles: LiveStyles
    registry: ModelRegistry | None = None
    secureboost_products: tuple[str, ...] = ()
    secureboost: dict[str, LiveSecureBoost] = field(default_factory=dict)
    secureboost_loaded_at: float = -1e18

    @classmethod
    def start(cls, redis: aioredis.Redis, key_prefix: str, registry: ModelRegistry, products: tuple[str, ...] = PRODUCTS,
              model_refresh_s: float = FEDERATED_REFRESH_S, style_checkpoint_every_s: float = CHECKPOINT_EVERY_S,
              secureboost_products: tuple[str, ...] = ()) -> Scorer:
        state = ScoringState(redis, key_prefix)
        return cls(state, LiveModels.start(registry, products, model_refresh_s=model_refresh_s),
                   LiveStyles.start(registry, state, checkpoint_every_s=style_checkpoint_every_s), registry,
                   secureboost_products)

    def refresh_secureboost(self) -> None:
        """The latest SecureBoost half of each product configured for it, every model_refresh_s."""
        if self.registry is None or not self.secureboost_products:
            return
        now = time.monotonic()
        if now - self.secureboost_loaded_at >= self.models.model_refresh_s:
            self.secureboost = load_secureboost(self.registry, self.secureboost_products)
            self.secureboost_loaded_at = now

    async def store_profiles(self, batch: list[Inbound[CustomerProfile | None]]) -> list[HandlerResult]:
        """Keep the latest profile per customer; a tombstone erases the customer's scoring state."""
        await self.state.store_profiles([inbound.message for inbound in batch if inbound.message is not None],
                                        [(inbound.key or b"").decode() for inbound in batch if inbound.message is None])
        return [[] for _ in batch]

    async def score(self, batch: list[Inbound[CustomerEvent]]) -> list[HandlerResult]:
        """One CustomerScores per event: a propensity and reason codes for every product, and the
        customer's style type."""
        await self.models.refresh()
        events = [inbound.message for inbound in batch]
        customer_ids = [event.customer_id for event in events]
        stored, join_ids = await self.state.profiles_and_join_ids(customer_ids)
        profiles = [profile or unknown_profile(customer) for profile, customer in zip(stored, customer_ids)]
        partials: list[PartialScoresOf] = [{} for _ in events]
        if self.models.federated:
            partials = await self.state.partial_scores(join_ids)
        federated = {product: model for product, model in self.models.federated.items()
                     if product not in self.secureboost_products}
        scores, features = score_batch(events, profiles, partials, self.models.live, federated, now_ms())
        self.refresh_secureboost()
        if self.secureboost:
            scores = apply_secureboost(scores, features, await self.state.split_decisions(join_ids), self.secureboost)
        await self.state.store_features([(event.customer_id, event.event_id, features[row])
                                         for row, (event, profile) in enumerate(zip(events, profiles))
                                         if profile.segment != UNKNOWN_SEGMENT])
        await self.styles.assign(scores, features, [profile.segment != UNKNOWN_SEGMENT for profile in profiles])
        await self.styles.checkpoint_due()
        return [[Outbound(SCORES, event.customer_id, message)] for event, message in zip(events, scores)]
