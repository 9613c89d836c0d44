"""The bank-only bootstrap against a real Redis, SQLite registry and broker: every product trained
from a generated history before scoring serves, scores that differ by customer and product, and a
product without history named and scored by the stated fallback."""
from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner

from demo.generator.history import campaign_contacts, profile_of
from demo.generator.population import make_population
from services.cli import app
from services.core.avro import AvroCodec
from services.core.clients import produce
from services.core.config import Settings
from services.core.kafka import Inbound
from services.core.supervisor import settings_env
from services.models.bank_features import FEATURE_NAMES, PRODUCTS
from services.models.history import HistoryRow, read_history, write_history
from services.models.registry import DataFingerprint, ModelRegistry
from services.protocol.stream_messages import CustomerEvent, CustomerScores, OfferResponse, ProductScore
from services.scoring.bootstrap import ALGORITHM, replay_responses, train_bank_models
from services.scoring.live_models import BANK_ALGORITHM, FALLBACK_REASONS, bank_parameters, fallback_model_name, model_name
from services.scoring.model import MIN_ROWS_PER_CLASS, ProductModel
from services.scoring.scorer import Scorer

CUSTOMERS = make_population(600, seed=5)


def _history(tmp_path: Path, keep=lambda row: True) -> list[HistoryRow]:  # type: ignore[no-untyped-def]
    path = tmp_path / "campaign-responses.csv"
    write_history(path, campaign_contacts(CUSTOMERS))
    return [row for row in read_history(path) if keep(row)]


def _inbound(message: object, key: bytes) -> Inbound:
    return Inbound(message, key, "t", 0, 0, 0, None)


async def _scores_of(scorer: Scorer, customers: list, event_type: str = "salary_credit") -> list[dict[str, ProductScore]]:  # type: ignore[type-arg]
    await scorer.store_profiles([_inbound(profile_of(c), c.customer_id.encode()) for c in customers])
    events = [CustomerEvent(f"e-{c.customer_id}", c.customer_id, event_type, round(c.monthly_income * 100), "CNY", "CN",
                            0, 0, "t", 0, 0) for c in customers]  # type: ignore[arg-type]
    results = await scorer.score([_inbound(event, event.customer_id.encode()) for event in events])
    scored: list[CustomerScores] = [result[0].message for result in results]
    return [{score.product: score for score in scores.scores} for scores in scored]


def _named(caplog: pytest.LogCaptureFixture, message: str) -> set[str]:
    """The products named by warnings saying `message` (their key=value facts)."""
    return {record.facts["product"] for record in caplog.records  # type: ignore[attr-defined]
            if record.levelno == logging.WARNING and message in record.getMessage()}


async def test_every_product_is_trained_before_serving_and_scores_differ_by_customer_and_product(
    settings: Settings, tmp_path: Path,
) -> None:
    registry = ModelRegistry(settings.database_url.get_secret_value())
    reports = train_bank_models(registry, _history(tmp_path), source="file:campaign-responses.csv")
    assert [report.product for report in reports] == list(PRODUCTS)
    for report in reports:
        assert report.trained and report.fallback_reason is None
        version = registry.version(report.version.service_number)  # type: ignore[union-attr]
        assert version is not None and version.algorithm == ALGORITHM
        assert version.rows_learned == report.rows - report.holdout_rows and len(version.data_fingerprint) == 64
        assert version.parameters["history"] == "file:campaign-responses.csv"
        # Judged out of time on the latest fifth of the contacts: better than chance for every product.
        assert version.metrics["auc_holdout"] > 0.55, (report.product, version.metrics)

    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    scorer = Scorer.start(redis, settings.redis_key_prefix, registry)
    assert all(live.serving_fallback() is None for live in scorer.models.live.values())
    # What scoring serves is what the bootstrap trained: the same weights, under the same version.
    for report in reports:
        live = scorer.models.live[report.product]
        assert live.version.service_number == report.version.service_number  # type: ignore[union-attr]
        assert np.array_equal(live.model.snapshot.weights, report.model.snapshot.weights)  # type: ignore[union-attr]

    scored = await _scores_of(scorer, CUSTOMERS[:40])
    for product in PRODUCTS:
        propensities = np.array([scores[product].propensity for scores in scored])
        assert propensities.max() / propensities.min() > 3, (product, propensities)  # not one constant
        reasons = [scores[product].reasons for scores in scored]
        assert all(len(r) == 3 and all(code.contribution != 0.0 for code in r) for r in reasons), product
        assert len({r[0].feature for r in reasons}) >= 2 or len({round(r[0].contribution, 6) for r in reasons}) > 10
        assert all(scores[product].service_number.startswith(f"CS-{model_name(product).upper()}-") for scores in scored)
    # And for one customer, the products differ.
    for scores in scored[:10]:
        assert len({round(scores[product].propensity, 6) for product in PRODUCTS}) == len(PRODUCTS)
    await redis.aclose()
    registry.close()


async def test_a_product_without_history_is_named_and_scored_by_the_fallback_until_it_has_learned_enough(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    registry = ModelRegistry(settings.database_url.get_secret_value())
    # No mortgage contacts at all; personal loan contacts that never converted (one class only).
    history = [row if row.product != "personal_loan" else HistoryRow(row.customer_id, row.product, row.features, 0, row.at_ms)
               for row in _history(tmp_path, keep=lambda row: row.product != "mortgage")]
    with caplog.at_level(logging.WARNING):
        reports = {report.product: report for report in train_bank_models(registry, history, source="file:x.csv")}
    assert not reports["mortgage"].trained and "0 training rows" in reports["mortgage"].fallback_reason  # type: ignore[operator]
    assert not reports["personal_loan"].trained and " 0 converted" in reports["personal_loan"].fallback_reason  # type: ignore[operator]
    assert registry.latest(model_name("mortgage")) is None
    assert _named(caplog, "no model trained") == {"mortgage", "personal_loan"}

    caplog.clear()
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    with caplog.at_level(logging.WARNING):
        scorer = Scorer.start(redis, settings.redis_key_prefix, registry)
    assert _named(caplog, "scored by the fallback") == {"mortgage", "personal_loan"}
    trained = [report for report in reports.values() if report.trained]
    prior = sum(r.model.learned_counts()[0] for r in trained) / sum(r.model.rows_learned for r in trained)  # type: ignore[union-attr]

    scored = await _scores_of(scorer, CUSTOMERS[:30])
    for product in ("mortgage", "personal_loan"):
        for scores in scored:
            score = scores[product]
            assert score.propensity == pytest.approx(prior) and score.reasons == FALLBACK_REASONS
            assert score.model_version.startswith(fallback_model_name(product) + "@v")
            assert ".FALLBACK-v" in score.service_number
        fallback = registry.version(scored[0][product].service_number)
        assert fallback is not None and fallback.model_name == fallback_model_name(product)
        assert fallback.parameters["propensity"] == pytest.approx(prior)
    assert all(not scores["credit_card"].service_number.count("FALLBACK") for scores in scored)

    # Responses teach the mortgage model (the learner registers its versions, services/scoring/learner.py);
    # once a version has learned enough of each outcome, it serves instead of the fallback.
    customer = CUSTOMERS[0]
    [features] = [np.frombuffer(raw, dtype=np.float64) for raw in
                  [await redis.hget(f"{settings.redis_key_prefix}features:{customer.customer_id}", f"e-{customer.customer_id}")]]
    scorer.models.model_refresh_s = 0.0
    for learned in (2 * MIN_ROWS_PER_CLASS - 1, 2 * MIN_ROWS_PER_CLASS):
        parent, checkpoint = registry.latest(model_name("mortgage"))  # type: ignore[misc]
        model = ProductModel.from_bytes(checkpoint)  # type: ignore[arg-type]
        while model.rows_learned < learned:
            model.learn(features, model.rows_learned % 2 == 1)
        registry.register(model_name=model_name("mortgage"), algorithm=BANK_ALGORITHM, parameters=bank_parameters(model),
                          feature_names=list(FEATURE_NAMES), rows_learned=model.rows_learned,
                          iterations=model.rows_learned, fingerprint=DataFingerprint(), operator="test",
                          started_at=dt.datetime.now(dt.UTC), checkpoint=model.to_bytes(),
                          parent_service_number=parent.service_number, only_if_latest=True)
        await scorer.models.refresh()
        [scores] = await _scores_of(scorer, [customer])
        if learned < 2 * MIN_ROWS_PER_CLASS:
            assert scores["mortgage"].reasons == FALLBACK_REASONS  # one short of enough
    assert scores["mortgage"].reasons != FALLBACK_REASONS and len(scores["mortgage"].reasons) == 3
    assert scores["mortgage"].service_number.startswith("CS-PROPENSITY.MORTGAGE-v")
    await redis.aclose()
    registry.close()


async def test_the_history_replayed_from_the_responses_topic_is_what_scoring_scored(
    settings: Settings, topics: list[str], codec: AvroCodec,
) -> None:
    registry = ModelRegistry(settings.database_url.get_secret_value())
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    scorer = Scorer.start(redis, settings.redis_key_prefix, registry)
    customers = CUSTOMERS[:12]
    scored = await _scores_of(scorer, customers)
    features = {c.customer_id: await redis.hget(f"{settings.redis_key_prefix}features:{c.customer_id}", f"e-{c.customer_id}")
                for c in customers}
    responses = [OfferResponse(f"r-{c.customer_id}-{kind}", "o", f"e-{c.customer_id}", c.customer_id, "camp",
                               "wealth_fund", "push", kind, 1_780_000_000_000 + index)
                 for index, c in enumerate(customers) for kind in ("delivered", "converted" if index % 3 else "ignored")]
    lost = OfferResponse("r-lost", "o", "e-never-scored", "C404", "camp", "credit_card", "sms", "converted", 1)
    replayed_twice = [*responses, responses[1], lost]
    await produce(settings.kafka_bootstrap_servers, settings.topic("responses"),
                  [(r.customer_id.encode(), codec.encode(r)) for r in replayed_twice] + [(b"x", b"not avro")])

    replayed = await replay_responses(settings, redis)
    assert replayed.responses == len(customers) + 1 and replayed.without_features == 1 and replayed.skipped == 1
    assert sorted(row.customer_id for row in replayed.rows) == sorted(c.customer_id for c in customers)
    for row in replayed.rows:
        assert row.product == "wealth_fund" and row.features.tobytes() == features[row.customer_id]
        index = next(i for i, c in enumerate(customers) if c.customer_id == row.customer_id)
        assert row.label == int(index % 3 != 0) and row.at_ms == 1_780_000_000_000 + index
    assert len(scored) == len(customers)
    await redis.aclose()
    registry.close()


def test_train_from_responses_with_none_yet_names_every_product_as_on_the_fallback(settings: Settings,
                                                                                     topics: list[str]) -> None:
    runner = CliRunner()
    env = settings_env(settings) | {"COLUMNS": "250"}
    neither = runner.invoke(app, ["train"], env=env)
    assert neither.exit_code == 2 and "exactly one of --history FILE and --from-responses" in neither.output
    trained = runner.invoke(app, ["train", "--from-responses", "--no-federated", "--json"], env=env)
    assert trained.exit_code == 0, trained.output
    report = json.loads(trained.output.strip().splitlines()[-1])
    assert report["source"] == f"topic:{settings.topic('responses')}" and report["history_rows"] == 0
    assert report["fallback_products"] == list(PRODUCTS)
    assert all("0 training rows" in entry["bank"]["fallback_reason"] for entry in report["products"].values())
