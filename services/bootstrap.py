"""The bootstrap job: every product's models trained from the bank's history before scoring serves.

A new deployment (`cipherstream train`, `cipherstream up`, `make demo`) runs it in two steps:

1. `train_bank_models`: each product's bank-only online model, replayed through the history
   (services/scoring/bootstrap.py). Needs only the model registry, so it runs before any service.
2. `train_federated_models`: each product's federated model with the partner over the exchange
   topics (services/exchange/training.py), for the customers PSI has aligned; needs the exchange
   and partner services and the alignment done. A join id takes part in a run once, so its rows
   are one per aligned customer (`customer_outcomes`: the latest contact's features, converted at
   any contact before the holdout cut); the trained half is then calibrated to a propensity per
   contact (`_calibrated`, a child version) and judged on the aligned customers' contacts after
   the cut, once the partner has pushed partial scores of the new version, beside the bank-only
   model on the same contacts.

Either step names every product it trained no model for, with the reason, in the report and in
a log line; scoring then names those products again at start and serves them by the fallback
(services/scoring/live_models.py). It sits above the services it drives (import-linter layers):
scoring and exchange never import each other.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis

from services.core.config import Settings
from services.core.errors import CipherstreamError, UnreachableError
from services.core.logs import facts
from services.core.runtime import ensure_sqlite_directory
from services.core.waiting import wait_until
from services.exchange.training import LabelledRow, aligned_rows, train_federated_over_exchange
from services.models.bank_features import FEATURE_NAMES, PRODUCTS
from services.models.federated import PARTNER_REASON, BankHalf
from services.models.fedlr import DEFAULT_MIN_BATCH_SIZE
from services.models.history import HistoryRow, read_history, split_by_time
from services.models.ranking import calibration_shift, roc_auc
from services.models.registry import DataFingerprint, ModelRegistry, ModelVersion
from services.protocol.bank_keys import BankKeys, parse_partial_score
from services.scoring.bootstrap import HOLDOUT_FRACTION, BankModelReport, replay_responses, train_bank_models
from services.scoring.model import MIN_ROWS_PER_CLASS, enough_history

log = logging.getLogger(__name__)
PARTIAL_SCORES_TIMEOUT_S = 120.0
# Measured on the generated history (700 aligned customers, a fifth of them converted): the job's
# defaults (3 epochs at 0.15) stop at a log loss of 0.52, still learning the base rate; 5 epochs
# at 1.0 reach 0.41, where 20 epochs of full-batch descent end (0.40), in 15 steps.
FEDERATED_EPOCHS, FEDERATED_BATCH_SIZE, FEDERATED_LEARNING_RATE = 5, 256, 1.0


@dataclass(frozen=True)
class History:
    """The rows to learn from and where they came from (recorded with every version)."""

    rows: list[HistoryRow]
    source: str
    notes: list[str] = field(default_factory=list)  # what could not be used, and why


@dataclass(frozen=True)
class FederatedReport:
    product: str
    version: ModelVersion | None
    rows: int  # aligned customers trained on
    positives: int
    seconds: float
    holdout_rows: int
    holdout_auc: float | None
    bank_only_holdout_auc: float | None  # the bank-only model on the same aligned holdout rows
    skipped_reason: str | None  # set exactly when version is None


@dataclass
class BootstrapReport:
    source: str
    history_rows: int
    notes: list[str]
    bank: list[BankModelReport]
    federated: list[FederatedReport] = field(default_factory=list)

    @property
    def fallback_products(self) -> list[str]:
        return [report.product for report in self.bank if not report.trained]


def history_from_file(path: Path) -> History:
    """A campaign-response export (services/models/history.py); HistoryError names a bad cell."""
    return History(read_history(path), f"file:{path.name}")


async def history_from_responses(settings: Settings) -> History:
    """The `responses` topic replayed from its beginning, with the features scoring stored."""
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    try:
        replayed = await replay_responses(settings, redis)
    finally:
        await redis.aclose()
    notes = []
    if replayed.without_features:
        notes.append(f"{replayed.without_features} of {replayed.responses} responses had no stored features "
                     "(expired or never scored): not learned")
    if replayed.skipped:
        notes.append(f"{replayed.skipped} responses unreadable or for a product not modelled: not learned")
    return History(replayed.rows, f"topic:{settings.topic('responses')}", notes)


def train_bank_models_from(settings: Settings, history: History, products: tuple[str, ...] = PRODUCTS,
                           operator: str = "bootstrap-job") -> BootstrapReport:
    """Step 1 for every product, registered in DATABASE_URL's registry."""
    ensure_sqlite_directory(settings.database_url.get_secret_value())  # the embedded default's folder may be new
    registry = ModelRegistry(settings.database_url.get_secret_value())
    try:
        bank = train_bank_models(registry, history.rows, source=history.source, products=products, operator=operator)
    finally:
        registry.close()
    return BootstrapReport(history.source, len(history.rows), list(history.notes), bank)


def customer_outcomes(rows: Sequence[HistoryRow]) -> list[LabelledRow]:
    """One federated training row per customer (a join id takes part in a run once): the bank
    features of their latest contact, and 1 if they converted at any of their contacts.

    >>> rows = [HistoryRow("A", "p", np.zeros(1), 1, 1), HistoryRow("A", "p", np.ones(1), 0, 2),
    ...         HistoryRow("B", "p", np.zeros(1), 0, 1)]
    >>> [(row.customer_id, float(row.features[0]), row.label) for row in customer_outcomes(rows)]
    [('A', 1.0, 1), ('B', 0.0, 0)]
    """
    latest: dict[str, HistoryRow] = {}
    converted: dict[str, int] = {}
    for row in sorted(rows, key=lambda row: row.at_ms):
        latest[row.customer_id] = row
        converted[row.customer_id] = converted.get(row.customer_id, 0) | row.label
    return [LabelledRow(customer, row.features, converted[customer]) for customer, row in latest.items()]


async def train_federated_models(settings: Settings, history: History, report: BootstrapReport,
                                 operator: str = "bootstrap-job") -> list[FederatedReport]:
    """Step 2 for every product step 1 trained a model for; the partner service must run."""
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    registry = ModelRegistry(settings.database_url.get_secret_value())
    unreachable: str | None = None
    try:
        for bank in report.bank:
            if unreachable is not None:  # the partner did not answer the last run: none would be answered
                report.federated.append(_skipped(bank.product, unreachable))
                continue
            try:
                report.federated.append(await _train_one(
                    settings, redis, registry, bank, [row for row in history.rows if row.product == bank.product],
                    operator))
            except UnreachableError as error:
                unreachable = f"the partner cannot be reached: {error}"
                report.federated.append(_skipped(bank.product, unreachable))
    finally:
        registry.close()
        await redis.aclose()
    return report.federated


async def _train_one(settings: Settings, redis: aioredis.Redis, registry: ModelRegistry, bank: BankModelReport,
                     rows: list[HistoryRow], operator: str) -> FederatedReport:
    product = bank.product
    if bank.model is None:
        return _skipped(product, f"no bank-only model either ({bank.fallback_reason})")
    started = time.monotonic()
    train, holdout = split_by_time(rows, HOLDOUT_FRACTION)
    aligned = await aligned_rows(redis, settings.redis_key_prefix, customer_outcomes(train))
    positives = sum(row.label for _, row in aligned)
    if len(aligned) < DEFAULT_MIN_BATCH_SIZE or not enough_history(positives, len(aligned) - positives):
        return _skipped(product, f"too few aligned customers: {len(aligned)}, {positives} converted (at least "
                                 f"{DEFAULT_MIN_BATCH_SIZE} and {MIN_ROWS_PER_CLASS} of each outcome are needed)")
    join_of = {row.customer_id: join_id for join_id, row in aligned}
    held_out = await aligned_rows(redis, settings.redis_key_prefix,
                                  [LabelledRow(row.customer_id, row.features, row.label) for row in holdout])
    join_of.update({row.customer_id: join_id for join_id, row in held_out})
    try:
        result = await train_federated_over_exchange(
            settings, redis, registry, product, [row for _, row in aligned], epochs=FEDERATED_EPOCHS,
            batch_size=FEDERATED_BATCH_SIZE, learning_rate=FEDERATED_LEARNING_RATE, operator=operator)
        partner_version = str(result.version.parameters["partner_version"])
        # Every aligned customer's, not only the held-out ones': scoring serves them all next.
        partials = await _partial_scores(settings, redis, result.version.model_name, partner_version,
                                         sorted(set(join_of.values())))
    except UnreachableError:
        raise
    except CipherstreamError as error:
        return _skipped(product, f"federated training failed: {error}")
    trained = registry.latest(result.version.model_name)
    assert trained is not None and trained[1] is not None  # registered just above
    half = BankHalf.from_bytes(trained[1])
    version, half = _calibrated(registry, result.version, half, [row for row in train if row.customer_id in join_of],
                                join_of, partials, operator)
    holdout_auc = bank_only_auc = None
    if held_out:
        features = np.vstack([row.features for _, row in held_out])
        labels = np.array([row.label for _, row in held_out])
        partner = np.array([partials[join_id] for join_id, _ in held_out])
        holdout_auc = roc_auc(labels, half.propensities(half.contributions(features, partner)))
        bank_only_auc = roc_auc(labels, bank.model.predict_batch(features)[0])
    log.info("federated model trained from history", extra=facts(
        product=product, service_number=version.service_number, rows=result.rows, auc_holdout=holdout_auc,
        auc_holdout_bank_only=bank_only_auc))
    return FederatedReport(product, version, result.rows, result.positives, time.monotonic() - started,
                           len(held_out), holdout_auc, bank_only_auc, None)


def _calibrated(registry: ModelRegistry, trained: ModelVersion, half: BankHalf, contacts: list[HistoryRow],
                join_of: dict[str, str], partials: dict[str, float], operator: str) -> tuple[ModelVersion, BankHalf]:
    """The trained half with its intercept shifted so that, over the aligned customers' training
    contacts, it predicts as many conversions per contact as there were: it learned whether a
    customer converts at any of their contacts, and scoring serves a propensity per contact.
    Registered as the trained version's child, which scoring loads (the partner's half is the same)."""
    started_at = dt.datetime.now(dt.UTC)
    features = np.vstack([row.features for row in contacts])
    labels = np.array([row.label for row in contacts])
    partner = np.array([partials[join_of[row.customer_id]] for row in contacts])
    contributions = half.contributions(features, partner)
    shift = calibration_shift(half.intercept + contributions.sum(axis=1), labels)
    calibrated = dataclasses.replace(half, intercept=half.intercept + shift)
    fingerprint = DataFingerprint(trained.data_fingerprint)
    for row in contacts:
        fingerprint.update(row.features.tolist(), bool(row.label), row.at_ms)
    version = registry.register(
        model_name=trained.model_name, algorithm="federated logistic regression, calibrated per contact",
        parameters={**trained.parameters, "trained_as": trained.service_number, "intercept_shift": shift,
                    "label": "converted at any contact before the holdout cut, calibrated to each contact"},
        feature_names=[*FEATURE_NAMES, PARTNER_REASON], rows_learned=trained.rows_learned, iterations=0,
        fingerprint=fingerprint, operator=operator, started_at=started_at,
        metrics={**trained.metrics, "calibration_contacts": len(contacts), "calibration_conversions": int(labels.sum())},
        checkpoint=calibrated.to_bytes(), parent_service_number=trained.service_number,
    )
    registry.record_deployment(version.service_number, operator=operator, target=socket.gethostname())
    return version, calibrated


def _skipped(product: str, reason: str) -> FederatedReport:
    log.warning("no federated model trained", extra=facts(product=product, reason=reason))
    return FederatedReport(product, None, 0, 0, 0.0, 0, None, None, reason)


async def _partial_scores(settings: Settings, redis: aioredis.Redis, model_name: str, partner_version: str,
                          join_ids: list[str]) -> dict[str, float]:
    """The partner's partial scores of `partner_version` for these join ids, once it has pushed all
    of them (it pushes every aligned person's when a training run ends; the exchange stores them)."""
    keys = BankKeys(settings.redis_key_prefix)
    found: dict[str, float] = {}

    async def all_current() -> bool:
        pipeline = redis.pipeline(transaction=False)
        for join_id in join_ids:
            pipeline.hget(keys.partial(join_id), model_name)
        for join_id, value in zip(join_ids, await pipeline.execute(), strict=True):
            if value is not None:
                version, score = parse_partial_score(value.decode())
                if version == partner_version:
                    found[join_id] = score
        return len(found) == len(join_ids)

    await wait_until(all_current, PARTIAL_SCORES_TIMEOUT_S,
                     lambda: f"the partner's partial scores of {partner_version} ({len(found)} of {len(join_ids)})")
    return found
