"""Online learning from responses is exactly once through crashes, on the real services: two scoring
replicas (one learns, by the lease), the exchange and the partner as processes on the embedded broker,
Redis and SQLite, with a federated model deployed for travel insurance.

Responses stream in while the learning scoring replica is killed with SIGKILL (when it has learned
rows its checkpoint does not hold yet) and the partner is killed with SIGKILL (as a window of online
federated learning is under way); the other scoring replica takes the lease over and learns on from
the checkpoint, the partner is restarted. Then the same responses are learned by an uninterrupted run
from the same start (the partner's half, the partial scores and a fresh registry put back). The two
must agree: every bank-only model, the federated model's bank half and the partner's half, to 1e-9;
the bank-only models learned each distinct terminal response once; the partner applied each window
once; and every model's lineage is one chain (no version shares a parent). `responses` has one
partition here, so both runs learn in the same order (across partitions the order may differ).
Printed (run with -s): when the kills came and how far each run got."""
from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from demo.generator.history import HISTORY_DAY, profile_of
from demo.generator.population import SyntheticCustomer, customer_records
from services.core.avro import AvroCodec
from services.core.clients import partitions_of, produce
from services.core.config import Settings
from services.core.kafka import create_topics, stage_group_id
from services.core.supervisor import ServiceRunner, wait_ready
from services.core.waiting import wait_committed_to_end, wait_until
from services.models.bank_features import FEATURE_NAMES, PRODUCTS, feature_vector
from services.models.federated import BankHalf, federated_model_name
from services.models.online_federated import OnlineHalf
from services.models.preparation import Preparation
from services.models.registry import DataFingerprint, ModelRegistry
from services.partner.store import PartnerStore
from services.protocol.bank_keys import BankKeys
from services.protocol.catalog import all_topic_names
from services.protocol.stream_messages import CustomerEvent, ExchangeMessage, OfferResponse
from services.scoring.admin import wait_learned_to_end
from services.scoring.learner import learner_id
from services.scoring.live_models import model_name
from services.scoring.model import ProductModel
from services.scoring.state import ScoringState
from tests.faults.accounting import send_steadily
from tests.faults.test_standby import all_scored
from tests.psi_scenario import psi_scenario
from tests.waiting import events_consumed

FEDERATED = "travel_insurance"
RATE_PER_S = 25.0
TOLERANCE = 1e-9


@dataclass
class Learned:
    """What a run ends with: per bank-only model (rows, weights, intercept), the federated bank half,
    and the partner's half."""

    bank: dict[str, tuple[int, np.ndarray, float]]
    federated: OnlineHalf
    partner_weights: np.ndarray
    partner_window: int


def _responses(customers: list[SyntheticCustomer], rng: np.random.Generator,
               codec: AvroCodec) -> tuple[list[tuple[bytes, bytes]], set[str]]:
    """Responses to offers of each customer's scored event: mostly travel insurance, some of every
    other product, a few not terminal, and 40 sent twice by the channel. Returns the records and the
    response ids that are learnable (terminal)."""
    responses = []
    for round_ in range(3):
        for customer in customers:
            product = FEDERATED if round_ < 2 else PRODUCTS[int(rng.integers(len(PRODUCTS)))]
            propensity = min(0.9, 4 * customer.true_propensity(product, HISTORY_DAY))
            outcome = "converted" if rng.random() < propensity else str(rng.choice(["ignored", "ignored", "opted_out", "opened"]))
            responses.append(OfferResponse(f"r{round_}-{customer.customer_id}", f"o{round_}-{customer.customer_id}",
                                           f"e-{customer.customer_id}", customer.customer_id, "camp", product, "push",
                                           outcome, 1_764_054_000_000 + len(responses)))
    order = rng.permutation(len(responses))
    responses = [responses[i] for i in order]
    resent = [responses[int(i)] for i in rng.choice(len(responses) // 2, size=40, replace=False)]
    stream = responses[:len(responses) // 2] + resent + responses[len(responses) // 2:]
    learnable = {r.response_id for r in responses if r.outcome in ("converted", "ignored", "opted_out")}
    return [(r.customer_id.encode(), codec.encode(r)) for r in stream], learnable


async def _learned(settings: Settings, partner: PartnerStore) -> Learned:
    registry = ModelRegistry(settings.database_url.get_secret_value())
    bank = {}
    for product in PRODUCTS:
        _, checkpoint = registry.latest(model_name(product))  # type: ignore[misc]
        model = ProductModel.from_bytes(checkpoint)
        bank[product] = (model.rows_learned, model.snapshot.weights, model.snapshot.intercept)
    _, checkpoint = registry.latest(federated_model_name(FEDERATED))  # type: ignore[misc]
    stored = await partner.model(federated_model_name(FEDERATED))
    assert stored is not None
    registry.close()
    return Learned(bank, OnlineHalf.from_bytes(checkpoint, 1.0, 0.0, 64), stored.weights, stored.window)


async def _settled(settings: Settings, partner: PartnerStore, timeout_s: float = 180) -> Learned:
    """Once the learner's checkpoint covers every response and holds no window in flight, and the
    partner's half is at the window the bank's half says."""
    await wait_learned_to_end(settings, timeout_s=timeout_s)

    async def settled() -> Learned | None:
        learned = await _learned(settings, partner)
        idle = learned.federated.sealed is None and learned.partner_window == learned.federated.applied
        return learned if idle else None

    learned: Learned = await wait_until(settled, timeout_s, "the last online window to be confirmed and checkpointed")
    return learned


def _one_chain(settings: Settings) -> dict[str, int]:
    """Each model's lineage is a chain: every version the child of the one before. Returns versions per model."""
    registry = ModelRegistry(settings.database_url.get_secret_value())
    counts = {}
    for name in [*(model_name(product) for product in PRODUCTS), federated_model_name(FEDERATED)]:
        lineage = registry.lineage(name)
        parents = [version.parent_service_number for version in lineage[1:]]
        assert parents == [version.service_number for version in lineage[:-1]], f"{name} forked: {parents}"
        counts[name] = len(lineage)
    registry.close()
    return counts


def _learner_of(runner: ServiceRunner, names: list[str]) -> str:
    """The scoring replica that holds the learner's lease (by its /metrics)."""
    import urllib.request

    for name in names:
        with urllib.request.urlopen(f"http://127.0.0.1:{runner.ports[name]}/metrics", timeout=2) as answer:
            if 'cipherstream_learner_active{service="scoring"} 1.0' in answer.read().decode():
                return name
    return ""


async def _next_plan(settings: Settings, codec: AvroCodec, timeout_s: float = 120) -> None:
    """Until the learner sends the plan of a new online window (the partner is then mid-window)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.exchange_servers, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        topic = settings.topic("exchange.to_partner")
        assigned = [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
        consumer.assign(assigned)
        await consumer.seek_to_end(*assigned)

        async def planned() -> bool:
            batches = await consumer.getmany(timeout_ms=100)
            return any(codec.decode(record.value, ExchangeMessage).kind == "fedlr_plan"
                       for records in batches.values() for record in records)

        await wait_until(planned, timeout_s, "the learner to plan an online window", interval_s=0)
    finally:
        await consumer.stop()


async def test_killing_the_learner_and_the_partner_mid_stream_learns_exactly_what_an_uninterrupted_run_learns(
    settings: Settings, codec: AvroCodec, tmp_path: Path,
) -> None:
    settings = settings.model_copy(update={
        "database_url": type(settings.redis_url)(f"sqlite:///{tmp_path / 'killed.db'}"),
        "learner_checkpoint_rows": 1000, "learner_checkpoint_interval_s": 2.0, "online_reply_timeout_s": 8.0,
        "model_refresh_s": 1.0})
    reference = settings.model_copy(update={"database_url": type(settings.redis_url)(f"sqlite:///{tmp_path / 'reference.db'}")})
    await create_topics(settings.kafka_bootstrap_servers, [settings.topic("responses")], 1)
    await create_topics(settings.kafka_bootstrap_servers, all_topic_names(settings), settings.topic_partitions)
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    scenario = await psi_scenario(settings, redis, customers=240, outsiders=30, seeds=(21, 23))
    partner_env = {"CIPHERSTREAM_REDIS_KEY_PREFIX": scenario.partner_prefix}
    partner = PartnerStore(redis, scenario.partner_prefix)
    prefix, keys = settings.redis_key_prefix, BankKeys(settings.redis_key_prefix)
    runner = ServiceRunner(settings, tmp_path / "logs")
    reference_runner = ServiceRunner(reference, tmp_path / "logs-reference")
    try:
        for name, env in (("ingest", None), ("exchange", None), ("partner", partner_env)):
            runner.start(name, extra_env=env, wait=False)
        runner.wait_all_ready()
        await produce(settings.kafka_bootstrap_servers, settings.topic("partner.features.raw"), scenario.feed)
        await produce(settings.kafka_bootstrap_servers, settings.topic("bank.events.raw"),
                      customer_records(scenario.customers, 1_764_054_000_000))
        by_national_id = {c.national_id: c for c in scenario.customers}

        async def aligned() -> dict[str, str] | None:
            found = await redis.mget([keys.join(c.customer_id) for c in scenario.customers])
            joined = {c.customer_id: j.decode() for c, j in zip(scenario.customers, found) if j}
            return joined if len(joined) == len(scenario.shared) and await all_scored(redis, prefix, joined.values()) else None
        joined: dict[str, str] = await wait_until(aligned, 120, "PSI to align every shared customer and partial scores to arrive")
        assert {by_national_id[n].customer_id for n in scenario.shared} == set(joined)

        # The start both runs share: each customer's scored features, a deployed federated half, partial scores of v1.
        rng = np.random.default_rng(8)
        features = {c.customer_id: feature_vector(CustomerEvent(f"e-{c.customer_id}", c.customer_id, "app_login", 0, "",
                                                                None, 0, 0, "t", 0, 0), profile_of(c))
                    for c in scenario.customers}
        await ScoringState(redis, prefix).store_features([(cid, f"e-{cid}", vector) for cid, vector in features.items()])
        matrix = np.vstack(list(features.values()))
        preparation = Preparation.fit(matrix)
        half = BankHalf(FEDERATED, rng.normal(0, 0.2, preparation.outputs), preparation, -1.5, scenario.model.version)
        ModelRegistry(settings.database_url.get_secret_value()).register(
            model_name=federated_model_name(FEDERATED), algorithm="federated logistic regression (minibatch)",
            parameters={"partner_version": half.partner_version}, feature_names=[*FEATURE_NAMES, "partner_features"],
            rows_learned=0, iterations=0, fingerprint=DataFingerprint(), operator="test", started_at=dt.datetime.now(dt.UTC),
            checkpoint=half.to_bytes())
        shutil.copy(tmp_path / "killed.db", tmp_path / "reference.db")
        partials = {join_id: await redis.hgetall(keys.partial(join_id)) for join_id in joined.values()}
        stream, learnable = _responses(scenario.customers, rng, codec)

        # The run with kills: two scoring replicas, responses arriving steadily.
        for instance in ("-a", "-b"):
            runner.start("scoring", instance=instance, wait=False)
        runner.wait_all_ready()
        replicas = ["scoring-a", "scoring-b"]
        learner = await wait_until(lambda: _learner_of(runner, replicas), 60, "one scoring replica to take the learner's lease")
        sender = asyncio.create_task(send_steadily(settings.kafka_bootstrap_servers, settings.topic("responses"), stream,
                                                   RATE_PER_S))
        registry = ModelRegistry(settings.database_url.get_secret_value())

        def unsaved() -> bool:  # the learner has learned rows its checkpoint does not hold
            position = registry.position(learner_id(settings))
            consumed = events_consumed(runner.ports[learner], "responses")
            return consumed >= 150 and consumed - (position.offsets.get(0, 0) if position else 0) >= 20
        await wait_until(lambda: asyncio.to_thread(unsaved), 120, "the learner to be ahead of its checkpoint")
        runner.running[learner].kill()
        killed_at = time.monotonic()
        runner.start("scoring", instance="-c", wait=False)  # the killed replica comes back, as a standby
        survivor = next(name for name in replicas if name != learner)
        await wait_until(lambda: _learner_of(runner, [survivor]), 60, "the other replica to take the lease over")
        takeover_s = time.monotonic() - killed_at
        await _next_plan(settings, codec)
        runner.running["partner"].kill()  # mid-window
        restarted = runner.start("partner", instance="-r", extra_env=partner_env, wait=False)
        wait_ready(runner.ports[restarted.name], restarted, timeout_s=60)
        await sender
        killed_run = await _settled(settings, partner)
        versions = _one_chain(settings)
        assert killed_run.federated.applied >= 3, "the test must run several online windows"
        for name in ("scoring-a", "scoring-b", "scoring-c"):
            if name in runner.running and name != learner:
                runner.running[name].stop()
        # The partner's last pushes stored before the start is put back.
        await wait_committed_to_end(settings.kafka_bootstrap_servers,
                                    {stage_group_id(settings, "exchange"): [settings.topic("exchange.to_bank")]})

        # The uninterrupted run, from the same start: the partner's half, the partial scores, a fresh registry.
        await partner.put_model(scenario.model)
        pipeline = redis.pipeline(transaction=True)
        for join_id, stored in partials.items():
            pipeline.delete(keys.partial(join_id))
            pipeline.hset(keys.partial(join_id), mapping=stored)
        await pipeline.execute()
        await redis.delete(*[key async for key in redis.scan_iter(match=f"{prefix}learned:*")])
        reference_runner.start("scoring")
        uninterrupted = await _settled(reference, partner)
        _one_chain(reference)

        print(f"\nkilled the learner after it was ahead of its checkpoint; takeover {takeover_s:.1f} s; "
              f"{killed_run.federated.applied} windows; versions {versions}")
        for product in PRODUCTS:
            rows, weights, intercept = killed_run.bank[product]
            assert rows == uninterrupted.bank[product][0], product
            assert np.allclose(weights, uninterrupted.bank[product][1], rtol=0, atol=TOLERANCE), product
            assert abs(intercept - uninterrupted.bank[product][2]) <= TOLERANCE, product
        assert sum(rows for rows, _, _ in killed_run.bank.values()) == len(learnable)  # each distinct response once
        ours, theirs = killed_run.federated, uninterrupted.federated
        assert (ours.applied, ours.rows_learned, ours.open.join_ids) == (theirs.applied, theirs.rows_learned, theirs.open.join_ids)
        assert np.allclose(ours.half.weights, theirs.half.weights, rtol=0, atol=TOLERANCE)
        assert abs(ours.half.intercept - theirs.half.intercept) <= TOLERANCE
        assert killed_run.partner_window == uninterrupted.partner_window == ours.applied
        assert np.allclose(killed_run.partner_weights, uninterrupted.partner_weights, rtol=0, atol=TOLERANCE)
        assert not np.allclose(killed_run.partner_weights, scenario.model.weights, atol=1e-6), "the partner's half never moved"
    finally:
        runner.stop_all()
        reference_runner.stop_all()
        await redis.aclose()
