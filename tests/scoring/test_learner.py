"""Scoring's learner in this process against the real broker, Redis and SQLite: a crash between
checkpoints loses no response and learns none twice, a resent response is learned once, and two
learners cannot fork a model's history."""
from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.core.avro import AvroCodec
from services.core.clients import consume, produce
from services.core.config import Settings
from services.core.dead_letter import DeadLetter
from services.core.kafka import create_topics, stage_group_id
from services.core.waiting import wait_until
from services.models.bank_features import FEATURE_NAMES
from services.models.registry import ModelRegistry, StaleVersionError
from services.protocol.stream_messages import OfferResponse
from services.scoring.learned_models import LearnedModels, OnlineSettings
from services.scoring.learner import Learner, learner_id
from services.scoring.live_models import model_name
from services.scoring.model import ProductModel
from services.scoring.scorer import Scorer
from services.scoring.state import ScoringState
from tests.scoring.test_scorer import PROFILE, _event, _inbound

PRODUCTS = ("credit_card", "wealth_fund")
CUSTOMERS = 40
OUTCOMES = ("converted", "ignored", "opted_out", "ignored", "opened", "ignored", "delivered", "converted")
MALFORMED = [b"\x00\x00\x00\x00", b"not avro at all"]


async def _responses(settings: Settings, codec: AvroCodec, redis: aioredis.Redis) -> tuple[int, set[str]]:
    """Scored features for every customer, then responses: terminal and not, 10 resent, one whose
    event was never scored, two malformed. Returns (records sent, ids that must be learned once)."""
    await create_topics(settings.kafka_bootstrap_servers, [settings.topic("responses"), settings.topic("dlq.responses")], 1)
    rng = np.random.default_rng(3)
    await ScoringState(redis, settings.redis_key_prefix).store_features(
        [(f"C{i}", f"e{i}", rng.normal(size=len(FEATURE_NAMES)) * 3) for i in range(CUSTOMERS)])
    responses = [OfferResponse(f"r{i}", f"o{i}", f"e{i % CUSTOMERS}", f"C{i % CUSTOMERS}", "camp", PRODUCTS[i % 2],
                               "push", OUTCOMES[i % len(OUTCOMES)], 1_000 + i) for i in range(160)]
    resent = responses[5:15]
    unscored = OfferResponse("r-unscored", "o", "e-none", "C1", "camp", "credit_card", "push", "converted", 9)
    records = [(b"bad", MALFORMED[0]), *[(r.customer_id.encode(), codec.encode(r)) for r in responses[:100]],
               (b"bad", MALFORMED[1]), *[(r.customer_id.encode(), codec.encode(r)) for r in [*resent, unscored]],
               *[(r.customer_id.encode(), codec.encode(r)) for r in responses[100:]]]
    await produce(settings.kafka_bootstrap_servers, settings.topic("responses"), records)
    learnable = {r.response_id for r in responses if r.outcome in ("converted", "ignored", "opted_out")}
    return len(records), learnable


def _learner(settings: Settings, codec: AvroCodec, redis: aioredis.Redis, database: Path, **options: object) -> Learner:
    return Learner(settings.model_copy(update=options), codec, redis, ModelRegistry(f"sqlite:///{database}"), PRODUCTS)


async def _learned_to(learner: Learner, end: int, rows: int | None = None, timeout_s: float = 60) -> None:
    """Until the learner has read every record (and learned `rows`, if given)."""
    def there() -> bool:
        models = learner.models
        return models is not None and models.offsets.get(0) == end and (
            rows is None or sum(model.rows_learned for model in models.bank.values()) == rows)
    await wait_until(there, timeout_s, f"the learner to read {end} records")


async def _checkpointed_to(registry: ModelRegistry, settings: Settings, end: int, timeout_s: float = 60) -> None:
    def there() -> bool:
        position = registry.position(learner_id(settings))
        return position is not None and position.offsets.get(0) == end
    await wait_until(there, timeout_s, f"a checkpoint at offset {end}")


def _weights(registry: ModelRegistry) -> dict[str, tuple[int, list[float], float]]:
    found = {}
    for product in PRODUCTS:
        _, checkpoint = registry.latest(model_name(product))  # type: ignore[misc]
        model = ProductModel.from_bytes(checkpoint)
        found[product] = (model.rows_learned, model.snapshot.weights.tolist(), model.snapshot.intercept)
    return found


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_crash_between_checkpoints_loses_no_response_and_learns_none_twice(
    settings: Settings, codec: AvroCodec, tmp_path: Path,
) -> None:
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    sent, learnable = await _responses(settings, codec, redis)
    # Checkpoints every 50 rows only: the crash comes with 120 rows learned, 20 of them after the last one.
    first = _learner(settings, codec, redis, tmp_path / "run.db", learner_checkpoint_rows=50,
                     learner_checkpoint_interval_s=3600.0)
    task = asyncio.create_task(first.run())
    await _learned_to(first, sent, len(learnable))
    await _stop(task)  # a crash: nothing saved after the last checkpoint
    saved = first.registry.position(learner_id(settings))
    assert saved is not None and saved.offsets[0] < sent, "the crash must come after rows the checkpoint does not hold"
    assert len(learnable) == 120 and sum(rows for rows, _, _ in _weights(first.registry).values()) == 100

    restarted = _learner(settings, codec, redis, tmp_path / "run.db", learner_checkpoint_interval_s=0.2)
    task = asyncio.create_task(restarted.run())
    await _checkpointed_to(restarted.registry, settings, sent)
    await _stop(task)
    # An uninterrupted learner of the same records, with a registry of its own.
    reference = _learner(settings, codec, redis, tmp_path / "reference.db", learner_checkpoint_interval_s=0.2)
    task = asyncio.create_task(reference.run())
    await _checkpointed_to(reference.registry, settings, sent)
    await _stop(task)

    recovered, uninterrupted = _weights(restarted.registry), _weights(reference.registry)
    assert sum(rows for rows, _, _ in recovered.values()) == len(learnable)  # every distinct response once
    for product in PRODUCTS:
        assert recovered[product][0] == uninterrupted[product][0]
        assert np.allclose(recovered[product][1], uninterrupted[product][1], rtol=0, atol=1e-12), product
        assert recovered[product][2] == pytest.approx(uninterrupted[product][2], abs=1e-12)
    for product in PRODUCTS:  # one history: each checkpoint the child of the one before
        lineage = restarted.registry.lineage(model_name(product))
        assert [v.parent_service_number for v in lineage[1:]] == [v.service_number for v in lineage[:-1]]
    letters = await consume(settings.kafka_bootstrap_servers, [settings.topic("dlq.responses")],
                            until=lambda got: len(got) >= 2, timeout_s=20)
    assert {codec.decode(r.value, DeadLetter).value for r in letters} == set(MALFORMED)
    await redis.aclose()


def test_two_learners_of_one_model_cannot_fork_its_history(tmp_path: Path) -> None:
    registry = ModelRegistry(f"sqlite:///{tmp_path / 'fork.db'}")
    online, learner = OnlineSettings(0.05, 0.0, 64), f"scoring:{uuid.uuid4().hex[:6]}"
    one, other = (LearnedModels.restore(registry, learner, PRODUCTS, online) for _ in range(2))
    features = np.ones(len(FEATURE_NAMES))
    for models in (one, other):  # both learn the same first rows (a lease lost during a pause)
        models.learn_bank("credit_card", features, True, 0)
        models.offsets[0] = 1
    one.checkpoint(registry)
    with pytest.raises(StaleVersionError):
        other.checkpoint(registry)
    again = LearnedModels.restore(registry, learner, PRODUCTS, online)  # the refused one reloads and reads on
    assert again.offsets == {0: 1} and again.bank["credit_card"].rows_learned == 1
    again.learn_bank("credit_card", features, False, 1)
    again.offsets[0] = 2
    again.checkpoint(registry)
    lineage = registry.lineage(model_name("credit_card"))
    assert len(lineage) == 2 and lineage[1].parent_service_number == lineage[0].service_number


async def test_serving_takes_up_the_learners_versions_and_each_score_carries_its_service_number(settings: Settings) -> None:
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    registry = ModelRegistry(settings.database_url.get_secret_value())
    scorer = Scorer.start(redis, settings.redis_key_prefix, registry, PRODUCTS, model_refresh_s=0.01)
    await scorer.store_profiles([_inbound(PROFILE)])
    [[before]] = await scorer.score([_inbound(_event("e1"))])
    models = LearnedModels.restore(registry, learner_id(settings), PRODUCTS, OnlineSettings(0.05, 0.0, 64))
    for row in range(30):  # both outcomes, enough of each for the model to serve (not the fallback)
        models.learn_bank("wealth_fund", np.full(len(FEATURE_NAMES), 2.0 if row % 2 else -2.0), row % 2 == 1, row)
    [learned] = models.checkpoint(registry)
    scorer.models.loaded_at = -1e9  # look for new versions on the next batch
    [[after]] = await scorer.score([_inbound(_event("e2"))])
    numbers = {score.product: score.service_number for score in after.message.scores}
    first = {score.product: score.service_number for score in before.message.scores}
    assert numbers["wealth_fund"] == learned.service_number != first["wealth_fund"]
    assert numbers["credit_card"] == first["credit_card"]
    assert registry.deployments(learned.service_number)  # the replica recorded that it serves it
    await redis.aclose()


async def test_a_first_learner_carries_on_where_the_old_responses_stage_left_off(
    settings: Settings, codec: AvroCodec, tmp_path: Path,
) -> None:
    """An upgrade: the old scoring stage learned responses in its consumer group and committed how far."""
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    sent, learnable = await _responses(settings, codec, redis)
    old_stage = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False,
                                 group_id=stage_group_id(settings, "scoring"))
    await old_stage.start()
    old_stage.assign([responses := TopicPartition(settings.topic("responses"), 0)])
    await old_stage.commit({responses: 101})  # past the first 100 responses (and a malformed record)
    await old_stage.stop()
    for index in range(100):  # and marked them learned, as it did: "1", no position
        await redis.set(f"{settings.redis_key_prefix}learned:r{index}", 1)
    learner = _learner(settings, codec, redis, tmp_path / "upgraded.db", learner_checkpoint_interval_s=0.2)
    task = asyncio.create_task(learner.run())
    await _checkpointed_to(learner.registry, settings, sent)
    await _stop(task)
    learned = sum(rows for rows, _, _ in _weights(learner.registry).values())
    # The terminal ones among the last 60 responses; not the 10 resent (the old stage marked them) nor the unscored.
    assert learned == len(learnable - {f"r{index}" for index in range(100)}) == 44
    await redis.aclose()
