"""Style types in scoring, against a real Redis and SQLite registry: every score carries its
customer's type once the segmenter is warm, the style vectors live in Redis and go with the
customer, the segmenter is checkpointed with lineage, restored at start, and replicas share
one lineage."""
from __future__ import annotations

import io
import json
import random

import fastavro
import numpy as np
import redis.asyncio as aioredis
from typer.testing import CliRunner

from demo.generator.history import profile_of
from demo.generator.population import make_population
from services.cli import app
from services.core.avro import AvroCodec
from services.core.config import REPO_ROOT, Settings
from services.core.kafka import Inbound
from services.core.supervisor import settings_env
from services.models.registry import ModelRegistry
from services.models.segmenter import STATE_WIDTH, STYLE_FEATURES, STYLE_MODEL_NAME, UNASSIGNED
from services.protocol.stream_messages import TRIGGER_EVENT_TYPES, CustomerEvent, CustomerScores
from services.scoring.scorer import Scorer

POPULATION = make_population(300, seed=5)
PROFILES = [profile_of(customer) for customer in POPULATION]


def _inbound(message: object, key: bytes = b"") -> Inbound:
    return Inbound(message, key, "t", 0, 0, 0, None)


def _events(count: int, seed: int, prefix: str) -> list[CustomerEvent]:
    rng = random.Random(seed)
    return [CustomerEvent(f"{prefix}{index}", rng.choice(POPULATION).customer_id, rng.choice(TRIGGER_EVENT_TYPES),  # type: ignore[arg-type]
                          rng.randint(1_000, 5_000_000), "CNY", "CN", index, index, "bank.events.raw", 0, index)
            for index in range(count)]


async def _scorer(settings: Settings, style_checkpoint_every_s: float = 3600.0) -> tuple[Scorer, aioredis.Redis, ModelRegistry]:
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    registry = ModelRegistry(settings.database_url.get_secret_value())
    return Scorer.start(redis, settings.redis_key_prefix, registry, style_checkpoint_every_s=style_checkpoint_every_s), \
        redis, registry


async def _score(scorer: Scorer, events: list[CustomerEvent], batch: int = 50) -> list[CustomerScores]:
    scored: list[CustomerScores] = []
    for start in range(0, len(events), batch):
        results = await scorer.score([_inbound(event) for event in events[start:start + batch]])
        scored += [result[0].message for result in results]  # type: ignore[misc]
    return scored


async def test_every_score_carries_its_customer_s_style_type_once_the_segmenter_is_warm(settings: Settings) -> None:
    scorer, redis, _ = await _scorer(settings)
    await scorer.store_profiles([_inbound(profile) for profile in PROFILES])
    warmup = scorer.styles.segmenter.warmup_rows
    early = await _score(scorer, _events(warmup - 6, seed=1, prefix="w"))
    assert {scores.style_type_id for scores in early} == {UNASSIGNED}
    assert {scores.style_type_name for scores in early} == {"unassigned"}
    later = await _score(scorer, _events(600, seed=2, prefix="e"))
    placed = later[50:]
    segmenter = scorer.styles.segmenter
    assert all(scores.style_type_id in segmenter.types for scores in placed)
    assert all(scores.style_type_name == segmenter.type_of(scores.style_type_id).name for scores in placed)
    assert len({scores.style_type_id for scores in placed}) >= 3  # the population has more than one kind
    [[unknown]] = await scorer.score([_inbound(CustomerEvent("u1", "C-nobody", "app_login", 0, "CNY", None, 0, 0, "t", 0, 0))])
    assert unknown.message.style_type_id == UNASSIGNED  # type: ignore[attr-defined]
    await redis.aclose()


async def test_a_customer_s_style_vector_lives_in_redis_and_is_erased_with_the_customer(settings: Settings) -> None:
    scorer, redis, _ = await _scorer(settings)
    profile = PROFILES[0]
    await scorer.store_profiles([_inbound(profile)])
    event = CustomerEvent("e1", profile.customer_id, "app_login", 0, "CNY", None, 0, 0, "t", 0, 0)
    await scorer.score([_inbound(event), _inbound(CustomerEvent("e2", profile.customer_id, "deposit", 0, "CNY", None, 0, 0,
                                                                "t", 0, 0))])
    key = f"{settings.redis_key_prefix}style:{profile.customer_id}"
    stored = await redis.get(key)
    assert stored is not None and len(stored) == 8 * STATE_WIDTH
    state = dict(zip(("events", *STYLE_FEATURES), np.frombuffer(stored, dtype=np.float64).tolist()))
    assert (state["events"], state["share_app_login"], state["share_deposit"]) == (2, 0.5, 0.5)  # both events, in order
    assert 0 < await redis.ttl(key) <= 90 * 24 * 3600
    await scorer.store_profiles([_inbound(None, key=profile.customer_id.encode())])
    assert not await redis.exists(key)
    await redis.aclose()


async def test_the_segmenter_is_checkpointed_with_lineage_and_restored_at_start(settings: Settings) -> None:
    scorer, redis, registry = await _scorer(settings, style_checkpoint_every_s=0.0)
    await scorer.store_profiles([_inbound(profile) for profile in PROFILES])
    await _score(scorer, _events(500, seed=4, prefix="c"))
    checkpointed = scorer.styles.version
    assert checkpointed.rows_learned == 500
    types = checkpointed.parameters["style_types"]
    assert {entry["style_id"] for entry in types} == set(scorer.styles.segmenter.types)
    restarted, _, _ = await _scorer(settings)
    assert restarted.styles.segmenter.rows_learned == 500
    assert restarted.styles.version == checkpointed  # serves the latest version: a restart does not fork the lineage
    lineage = registry.lineage(STYLE_MODEL_NAME)
    assert [version.parent_service_number for version in lineage[1:]] == [version.service_number for version in lineage[:-1]]
    assert registry.deployments(restarted.styles.version.service_number)
    vectors = np.array([np.frombuffer(stored, dtype=np.float64)[1:] for stored in
                        await redis.mget([f"{settings.redis_key_prefix}style:{p.customer_id}" for p in PROFILES]) if stored])
    assert len(vectors) > 100
    assert (restarted.styles.segmenter.predict_many(vectors) == scorer.styles.segmenter.predict_many(vectors)).all()
    assert restarted.styles.segmenter.types == scorer.styles.segmenter.types
    await redis.aclose()


async def test_a_replica_behind_the_latest_version_adopts_it_instead_of_forking(settings: Settings) -> None:
    first, redis, registry = await _scorer(settings)
    second, _, _ = await _scorer(settings)
    for scorer in (first, second):
        await scorer.store_profiles([_inbound(profile) for profile in PROFILES])
    await _score(first, _events(400, seed=5, prefix="a"))
    await _score(second, _events(300, seed=6, prefix="b"))
    first.styles.checkpoint()  # first is the latest: it registers
    second.styles.checkpoint()  # second is behind: it adopts first's version and drops its own learning
    assert second.styles.version == first.styles.version
    assert second.styles.segmenter.rows_learned == first.styles.segmenter.rows_learned == 400
    assert second.styles.segmenter.types == first.styles.segmenter.types
    lineage = registry.lineage(STYLE_MODEL_NAME)
    assert [version.parent_service_number for version in lineage[1:]] == [version.service_number for version in lineage[:-1]]
    await redis.aclose()


def test_scores_written_before_style_types_read_as_unassigned(codec: AvroCodec) -> None:
    old_schema = json.loads((REPO_ROOT / "schemas/history/cipherstream.CustomerScores/v1.avsc").read_text())
    record = {"event_id": "e", "customer_id": "C1", "event_type": "app_login", "received_at_ms": 1, "scored_at_ms": 2,
              "segment": "mass", "preferred_channel": "sms", "timezone": "UTC", "age": 40, "products_held": [],
              "consent_marketing": True, "scores": []}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(old_schema), record)
    v1_id = next(version["id"] for version in json.loads((REPO_ROOT / "schemas/manifest.json").read_text())
                 ["schemas"]["cipherstream.CustomerScores"]["versions"] if version["version"] == 1)
    assert v1_id != codec.store.current["cipherstream.CustomerScores"].schema_id
    decoded = codec.decode(b"\x00" + v1_id.to_bytes(4, "big") + body.getvalue(), CustomerScores)
    assert (decoded.style_type_id, decoded.style_type_name) == (UNASSIGNED, "unassigned")
    assert decoded.customer_id == "C1"



async def test_cipherstream_styles_list_shows_the_types_scoring_serves(settings: Settings) -> None:
    runner = CliRunner()
    env = settings_env(settings) | {"COLUMNS": "300"}
    empty = runner.invoke(app, ["styles", "list"], env=env)
    assert empty.exit_code == 0 and "no style types yet" in empty.output, empty.output
    scorer, redis, _ = await _scorer(settings, style_checkpoint_every_s=0.0)
    await scorer.store_profiles([_inbound(profile) for profile in PROFILES])
    await _score(scorer, _events(400, seed=8, prefix="s"))
    listed = runner.invoke(app, ["styles", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert scorer.styles.version.service_number in listed.output
    assert all(style.name in listed.output for style in scorer.styles.segmenter.types.values())
    await redis.aclose()
