"""`cipherstream train --history FILE` on a new deployment, as an operator runs it: the exchange,
ingest and partner services running and the customers aligned, every product's bank-only and
federated models trained from a generated campaign-response export before scoring starts; then
scoring serves them, so propensities and reason codes differ across customers and products, and
the product the export has no history for is named and scored by the stated fallback."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from demo.generator.history import campaign_contacts
from demo.generator.population import event_records, make_population
from demo.generator.publish import publish_population
from demo.waiting import wait_aligned, wait_profiles_stored
from services.core.avro import AvroCodec
from services.core.clients import consume, produce
from services.core.config import REPO_ROOT, Settings
from services.core.supervisor import ServiceRunner, partner_env, settings_env
from services.models.bank_features import PRODUCTS
from services.models.federated import federated_model_name
from services.models.history import write_history
from services.models.registry import ModelRegistry
from services.protocol.stream_messages import CustomerScores
from services.scoring.live_models import FALLBACK_REASONS, model_name

WITHOUT_HISTORY = "mortgage"


def _cipherstream(settings: Settings, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *arguments], cwd=REPO_ROOT, env=settings_env(settings),
                          capture_output=True, text=True, timeout=900)


def test_train_from_an_export_then_scoring_serves_trained_models_for_every_product(
    settings: Settings, topics: list[str], codec: AvroCodec, tmp_path: Path,
) -> None:
    customers = make_population(1000, seed=7)
    export = tmp_path / "campaign-responses.csv"
    write_history(export, (c for c in campaign_contacts(customers) if c.product != WITHOUT_HISTORY))
    runner = ServiceRunner(settings, tmp_path / "logs")
    try:
        for name in ("ingest", "exchange"):
            runner.start(name, wait=False)
        runner.start("partner", extra_env=partner_env(settings), wait=False)
        runner.wait_all_ready()

        async def publish_and_align() -> None:
            published = await publish_population(settings, customers)
            await wait_aligned(settings, published.shared_people, timeout_s=180)
        asyncio.run(publish_and_align())

        trained = _cipherstream(settings, "train", "--history", str(export), "--json")
        assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
        report = json.loads(trained.stdout.strip().splitlines()[-1])
        assert report["fallback_products"] == [WITHOUT_HISTORY]
        products = report["products"]
        assert "too little history: 0 training rows" in products[WITHOUT_HISTORY]["bank"]["fallback_reason"]
        assert "no bank-only model" in products[WITHOUT_HISTORY]["federated"]["skipped_reason"]
        registry = ModelRegistry(settings.database_url.get_secret_value())
        federated = []
        for product in PRODUCTS:
            if product == WITHOUT_HISTORY:
                assert registry.latest(model_name(product)) is None
                continue
            bank = products[product]["bank"]
            latest = registry.latest(model_name(product))
            assert latest is not None and latest[0].service_number == bank["service_number"]
            assert latest[0].metrics["auc_holdout"] == bank["auc_holdout"] > 0.55
            entry = products[product]["federated"]
            if entry["service_number"] is not None:
                federated.append(product)
                fed = registry.latest(federated_model_name(product))
                assert fed is not None and fed[0].service_number == entry["service_number"]
                assert entry["rows"] > 300 and entry["auc_holdout"] is not None and entry["auc_holdout"] > 0.55, products
            else:
                assert "too few aligned customers" in entry["skipped_reason"], entry
        # The partner's features carry the travel affinity the bank cannot see: its federated model exists.
        assert "travel_insurance" in federated and len(federated) >= 3, products

        # Scoring starts after the training, and serves what was trained.
        runner.start("scoring")
        events = list(event_records(customers, 600, seed=8))
        asyncio.run(wait_profiles_stored(settings, [c.customer_id for c in customers], timeout_s=120))
        asyncio.run(produce(settings.kafka_bootstrap_servers, settings.topic("bank.events.raw"), events))
        records = asyncio.run(consume(settings.kafka_bootstrap_servers, [settings.topic("scores")],
                                      until=lambda got: len(got) >= len(events), timeout_s=180))
        scored = [codec.decode(record.value, CustomerScores) for record in records]
        assert len(scored) == len(events)
        for product in PRODUCTS:
            scores = [next(s for s in customer_scores.scores if s.product == product) for customer_scores in scored]
            if product == WITHOUT_HISTORY:
                assert all(s.reasons == FALLBACK_REASONS and ".FALLBACK-v" in s.service_number for s in scores)
                assert len({s.propensity for s in scores}) == 1
                continue
            propensities = np.array([s.propensity for s in scores])
            assert np.quantile(propensities, 0.9) / np.quantile(propensities, 0.1) > 2, (product, propensities)
            assert all(len(s.reasons) == 3 and all(r.contribution != 0.0 for r in s.reasons) for s in scores)
            assert len({s.reasons[0].feature for s in scores}) >= 2, product
            assert not any("FALLBACK" in s.service_number for s in scores)
            if product in federated:
                with_partner = [s for s in scores if s.partner_contributed]
                assert with_partner and all(s.service_number == products[product]["federated"]["service_number"]
                                            for s in with_partner)
        # A customer's products differ from one another.
        assert all(len({round(s.propensity, 9) for s in customer_scores.scores}) >= len(PRODUCTS) - 1
                   for customer_scores in scored[:50])
        registry.close()
    finally:
        runner.stop_all()


def test_a_bad_history_file_is_refused_naming_file_row_and_column(settings: Settings, tmp_path: Path) -> None:
    export = tmp_path / "export.csv"
    write_history(export, list(campaign_contacts(make_population(5)))[:3])
    lines = export.read_text().splitlines()
    lines[2] = lines[2].replace(",0,2", ",maybe,2").replace(",1,2", ",maybe,2")
    export.write_text("\n".join(lines) + "\n")
    refused = _cipherstream(settings, "train", "--history", str(export), "--no-federated")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    output = " ".join(refused.stdout.split())
    assert str(export.name) in output and "row 3, column label: 'maybe' is not 0 or 1" in output, output
    assert ModelRegistry(settings.database_url.get_secret_value()).latest(model_name("credit_card")) is None
