"""The bank's federated training job: drives the four-step protocol with the live partner service
over the exchange topics, then registers the bank's half in the model registry.

A job, not a stream stage (as FATE runs jobs): it sends to exchange.to_partner and reads the
partner's answers of its own run from exchange.to_bank through an `ExchangeChannel`
(services/protocol/channel.py; the exchange service ignores fedlr_* messages). Its rows are the
bank's labelled history for one product: customer, bank feature vector
(services/models/bank_features.py), label; only aligned customers take part.
The bank prepares its features locally (services/models/preparation.py, fitted on these rows,
stored in the checkpoint, never sent); training stops when the loss settles (fedlr's
`StoppingRule`) or after `epochs`. When it returns, scoring picks the new version up within FEDERATED_REFRESH_S and the partner has
pushed partial scores of the new version for everyone aligned.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import socket
import time
from dataclasses import dataclass

import numpy as np
import redis.asyncio as aioredis

from services.core.avro import AvroCodec, SchemaStore
from services.core.config import Settings
from services.core.errors import ValidationError
from services.models.bank_features import FEATURE_NAMES
from services.models.federated import BankHalf, federated_model_name
from services.models.fedlr import (
    DEFAULT_LEARNING_RATE,
    DEFAULT_MAX_EPOCHS,
    DEFAULT_STOPPING,
    BankParty,
    Mode,
    default_batch_size,
)
from services.models.registry import DataFingerprint, ModelRegistry, ModelVersion
from services.protocol.bank_keys import BankKeys
from services.protocol.channel import ExchangeChannel
from services.protocol.exchange_messages import BatchScores, MaskedGradient, TrainingFinish, TrainingRun

REPLY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LabelledRow:
    customer_id: str
    features: np.ndarray  # FEATURE_NAMES order
    label: int


@dataclass(frozen=True)
class TrainingResult:
    version: ModelVersion
    rows: int
    positives: int
    epochs: int  # run: fewer than asked when the loss settled
    converged: bool
    seconds: float
    losses: list[float]


async def aligned_rows(redis: aioredis.Redis, key_prefix: str, rows: list[LabelledRow]) -> list[tuple[str, LabelledRow]]:
    """(join id, row) for the rows whose customer PSI aligned with the partner."""
    join_ids = await redis.mget([BankKeys(key_prefix).join(row.customer_id) for row in rows]) if rows else []
    return [(join_id.decode(), row) for join_id, row in zip(join_ids, rows) if join_id]


@dataclass(frozen=True)
class TrainingRows:
    """The aligned history a training job runs on: join ids, features (FEATURE_NAMES order), 0/1 labels."""
    join_ids: list[str]
    features: np.ndarray
    labels: np.ndarray  # float64

    def fingerprint(self) -> DataFingerprint:
        fingerprint = DataFingerprint("")
        for features, label in zip(self.features, self.labels):
            fingerprint.update(features.tolist(), bool(label))
        return fingerprint


async def training_rows(redis: aioredis.Redis, key_prefix: str, product: str, history: list[LabelledRow]) -> TrainingRows:
    """`product`'s history rows whose customer PSI aligned, or a ValidationError when none did."""
    rows = await aligned_rows(redis, key_prefix, history)
    if not rows:
        raise ValidationError(f"no aligned customer in the {len(history)} history rows for {product}", reason="no_rows")
    return TrainingRows([join_id for join_id, _ in rows], np.vstack([row.features for _, row in rows]),
                        np.array([row.label for _, row in rows], dtype=np.float64))


def new_run(settings: Settings, model_name: str) -> tuple[str, str, ExchangeChannel]:
    """A training run's id (what the partner's answers are matched by), the version label both halves
    are filed under, and the (not yet started) channel it runs over."""
    run_id = secrets.token_hex(16)
    return run_id, f"{model_name}@{run_id[:12]}", ExchangeChannel(settings, AvroCodec(SchemaStore(settings.schema_dir)))


async def train_federated_over_exchange(
    settings: Settings, redis: aioredis.Redis, registry: ModelRegistry, product: str, history: list[LabelledRow], *,
    mode: Mode = "minibatch", epochs: int = DEFAULT_MAX_EPOCHS, batch_size: int | None = None,
    learning_rate: float = DEFAULT_LEARNING_RATE, operator: str = "federated-training-job",
) -> TrainingResult:
    """Train and register `product`'s federated model: at most `epochs` epochs of the protocol with the
    partner, batches of `batch_size` rows (None: fedlr's `default_batch_size`)."""
    started = time.monotonic()
    started_at = dt.datetime.now(dt.UTC)
    data = await training_rows(redis, settings.redis_key_prefix, product, history)
    join_ids = data.join_ids
    bank = BankParty(join_ids, data.labels, data.features, learning_rate=learning_rate)
    model_name = federated_model_name(product)
    run_id, version_label, exchange = new_run(settings, model_name)
    await exchange.start()
    try:
        await exchange.send(TrainingRun.of(model_name, version_label, join_ids, bank.start()), run_id)
        batch_rows = len(join_ids) if mode == "batch" else (
            batch_size if batch_size is not None else default_batch_size(len(join_ids), bank.min_batch_size))
        converged = False
        for epoch in range(epochs):
            for plan in bank.plan_epoch(epoch, batch_rows):
                sent = await exchange.send(plan, run_id)
                scores, answer = await exchange.reply(run_id, [BatchScores], sent, REPLY_TIMEOUT_S)
                residuals = await asyncio.to_thread(bank.residuals_step, plan, scores, mode == "online")
                sent = await exchange.send(residuals, run_id, answer)
                masked, answer = await exchange.reply(run_id, [MaskedGradient], sent, REPLY_TIMEOUT_S)
                await exchange.send(await asyncio.to_thread(bank.decrypt_step, masked), run_id, answer)
            bank.end_epoch()
            if DEFAULT_STOPPING.should_stop(bank.epoch_losses):
                converged = True
                break
        await exchange.send(TrainingFinish(), run_id)
    finally:
        await exchange.stop()
        bank.close()
    half = BankHalf(product, bank.weights.copy(), bank.preparation, bank.bias, version_label)
    fingerprint = data.fingerprint()
    version = registry.register(
        model_name=model_name, algorithm=f"federated logistic regression ({mode}, Paillier 2048)",
        parameters={"learning_rate": learning_rate, "learning_rate_decay": bank.learning_rate_decay,
                    "batch_size": batch_rows, "max_epochs": epochs, "mode": mode, "partner_version": version_label,
                    "min_batch_size": bank.min_batch_size, "bank_preparation": bank.preparation.describe()},
        feature_names=[*FEATURE_NAMES, "partner_features"], rows_learned=len(join_ids), iterations=len(bank.epoch_losses),
        fingerprint=fingerprint, operator=operator, started_at=started_at,
        metrics={"log_loss_last_epoch": bank.epoch_losses[-1], "converged": converged}, checkpoint=half.to_bytes(),
    )
    registry.record_deployment(version.service_number, operator=operator, target=socket.gethostname())
    return TrainingResult(version, len(join_ids), int(data.labels.sum()), len(bank.epoch_losses), converged,
                          time.monotonic() - started, list(bank.epoch_losses))
