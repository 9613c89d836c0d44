"""The bank's federated training job: drives the four-step protocol with the live partner service
over the exchange topics, then registers the bank's half in the model registry.

A job, not a stream stage (as FATE runs jobs): it produces to exchange.to_partner and reads the
partner's replies of its own run from exchange.to_bank (no consumer group; the exchange service
ignores fedlr_* messages). Its rows are the bank's labelled history for one product: customer,
bank feature vector (services/models/bank_features.py), label; only aligned customers take part.
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
from typing import TypeVar

import numpy as np
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.core.avro import AvroCodec, SchemaStore
from services.core.clients import partitions_of
from services.core.config import Settings
from services.core.errors import UnreachableError, ValidationError
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
from services.protocol.catalog import EXCHANGE_TO_BANK
from services.protocol.exchange import envelope, open_payload
from services.protocol.exchange_messages import BatchScores, ExchangePayload, MaskedGradient, TrainingFinish, TrainingRun
from services.protocol.kinds import kind_of
from services.protocol.stream_messages import ExchangeMessage

REPLY_TIMEOUT_S = 120.0
P = TypeVar("P", bound=ExchangePayload)


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


class _Exchange:
    """Send to the partner; wait for its reply of one kind in this run."""

    def __init__(self, settings: Settings, codec: AvroCodec, run_id: str) -> None:
        self.settings, self.codec, self.run_id = settings, codec, run_id
        self.producer = AIOKafkaProducer(bootstrap_servers=settings.exchange_servers, acks="all",
                                         max_request_size=8 * 1024 * 1024, enable_idempotence=settings.exactly_once)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=settings.exchange_servers, enable_auto_commit=False,
                                         group_id=None, fetch_max_wait_ms=settings.fetch_max_wait_ms,
                                         max_partition_fetch_bytes=8 * 1024 * 1024)

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()
        topic = self.settings.topic(EXCHANGE_TO_BANK)
        partitions = await partitions_of(self.consumer, topic)
        if not partitions:
            raise UnreachableError(f"topic {topic} does not exist on {self.settings.exchange_servers}")
        assigned = [TopicPartition(topic, partition) for partition in partitions]
        self.consumer.assign(assigned)
        await self.consumer.seek_to_end(*assigned)  # only replies to what we are about to send

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.producer.stop()

    async def send(self, message: ExchangePayload) -> str:
        outbound = envelope(self.codec, message, "bank", self.run_id)
        await self.producer.send_and_wait(self.settings.topic(outbound.topic), self.codec.encode(outbound.message),
                                          key=outbound.key.encode())
        return outbound.message.message_id

    async def reply(self, message_type: type[P]) -> P:
        kind = kind_of(message_type).name
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while time.monotonic() < deadline:
            batches = await self.consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    message = self.codec.decode(record.value, ExchangeMessage)
                    if message.session_id == self.run_id and message.sender == "partner" and message.kind == kind:
                        return open_payload(self.codec, message, message_type)
        raise UnreachableError(f"no {kind} from the partner within {REPLY_TIMEOUT_S:.0f} s")


async def train_federated_over_exchange(
    settings: Settings, redis: aioredis.Redis, registry: ModelRegistry, product: str, history: list[LabelledRow], *,
    mode: Mode = "minibatch", epochs: int = DEFAULT_MAX_EPOCHS, batch_size: int | None = None,
    learning_rate: float = DEFAULT_LEARNING_RATE, operator: str = "federated-training-job",
) -> TrainingResult:
    """Train and register `product`'s federated model: at most `epochs` epochs of the protocol with the
    partner, batches of `batch_size` rows (None: fedlr's `default_batch_size`)."""
    started = time.monotonic()
    started_at = dt.datetime.now(dt.UTC)
    rows = await aligned_rows(redis, settings.redis_key_prefix, history)
    if not rows:
        raise ValidationError(f"no aligned customer in the {len(history)} history rows for {product}", reason="no_rows")
    join_ids = [join_id for join_id, _ in rows]
    features = np.vstack([row.features for _, row in rows])
    labels = np.array([row.label for _, row in rows], dtype=np.float64)
    bank = BankParty(join_ids, labels, features, learning_rate=learning_rate)
    run_id = secrets.token_hex(16)
    model_name = federated_model_name(product)
    version_label = f"{model_name}@{run_id[:12]}"
    exchange = _Exchange(settings, AvroCodec(SchemaStore(settings.schema_dir)), run_id)
    await exchange.start()
    try:
        await exchange.send(TrainingRun.of(model_name, version_label, join_ids, bank.start()))
        batch_rows = len(join_ids) if mode == "batch" else (
            batch_size if batch_size is not None else default_batch_size(len(join_ids), bank.min_batch_size))
        converged = False
        for epoch in range(epochs):
            for plan in bank.plan_epoch(epoch, batch_rows):
                await exchange.send(plan)
                scores = await exchange.reply(BatchScores)
                await exchange.send(await asyncio.to_thread(bank.residuals_step, plan, scores, mode == "online"))
                masked = await exchange.reply(MaskedGradient)
                await exchange.send(await asyncio.to_thread(bank.decrypt_step, masked))
            bank.end_epoch()
            if DEFAULT_STOPPING.should_stop(bank.epoch_losses):
                converged = True
                break
        await exchange.send(TrainingFinish())
    finally:
        await exchange.stop()
        bank.close()
    half = BankHalf(product, bank.weights.copy(), bank.preparation, bank.bias, version_label)
    fingerprint = DataFingerprint("")
    for (_, row) in rows:
        fingerprint.update(row.features.tolist(), bool(row.label))
    version = registry.register(
        model_name=model_name, algorithm=f"federated logistic regression ({mode}, Paillier 2048)",
        parameters={"learning_rate": learning_rate, "learning_rate_decay": bank.learning_rate_decay,
                    "batch_size": batch_rows, "max_epochs": epochs, "mode": mode, "partner_version": version_label,
                    "min_batch_size": bank.min_batch_size, "bank_preparation": bank.preparation.describe()},
        feature_names=[*FEATURE_NAMES, "partner_features"], rows_learned=len(rows), iterations=len(bank.epoch_losses),
        fingerprint=fingerprint, operator=operator, started_at=started_at,
        metrics={"log_loss_last_epoch": bank.epoch_losses[-1], "converged": converged}, checkpoint=half.to_bytes(),
    )
    registry.record_deployment(version.service_number, operator=operator, target=socket.gethostname())
    return TrainingResult(version, len(rows), int(labels.sum()), len(bank.epoch_losses), converged,
                          time.monotonic() - started, list(bank.epoch_losses))
