"""The bank's SecureBoost training job: grows the trees with the live partner service over the exchange
topics, then registers the bank's half (`sbt.<product>`) in the model registry.

The same history as federated LR (services/exchange/training.py: customer, bank feature vector,
label; only aligned customers take part), the same reply reading (`ExchangeChannel`, services/protocol/channel.py), the steps of
services/models/secureboost: `sbt_start`, per tree `sbt_gradients` (in chunks under the topics'
message limit), per level `sbt_nodes` -> `sbt_histograms` -> `sbt_splits` -> `sbt_split_rows`, and
`sbt_finish`, after which the partner files its split table and pushes every aligned person's
split decisions; scoring serves the new version for the products configured for SecureBoost.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time
from dataclasses import asdict

import redis.asyncio as aioredis

from services.core.config import Settings
from services.exchange.training import REPLY_TIMEOUT_S, LabelledRow, TrainingResult, new_run, training_rows
from services.models.bank_features import FEATURE_NAMES
from services.models.registry import ModelRegistry
from services.models.secureboost import BankParty, BoostingParameters
from services.models.secureboost.serving import SbtBankHalf, secureboost_model_name
from services.protocol.exchange import MAX_PAYLOAD_BYTES
from services.protocol.exchange_messages import SbtHistograms, SbtSplitRows

# Join ids are 32 hex characters (34 bytes in Avro): 60,000 of them stay well under the message limit.
MAX_START_IDS = 60_000


async def train_secureboost_over_exchange(
    settings: Settings, redis: aioredis.Redis, registry: ModelRegistry, product: str, history: list[LabelledRow], *,
    parameters: BoostingParameters | None = None, operator: str = "secureboost-training-job",
) -> TrainingResult:
    started = time.monotonic()
    started_at = dt.datetime.now(dt.UTC)
    data = await training_rows(redis, settings.redis_key_prefix, product, history)
    params = parameters or BoostingParameters()
    bank = BankParty(data.join_ids, data.labels, data.features, params)
    model_name = secureboost_model_name(product)
    run_id, version_label, exchange = new_run(settings, model_name)
    await exchange.start()
    try:
        for chunk in bank.start(model_name, version_label).chunks(MAX_START_IDS):
            await exchange.send(chunk, run_id)
        for tree in range(params.trees):
            gradients = await asyncio.to_thread(bank.gradients, tree)
            for chunk in gradients.chunks((MAX_PAYLOAD_BYTES - 1024) // gradients.width):
                await exchange.send(chunk, run_id)
            while (request := bank.node_request()) is not None:
                sent = await exchange.send(request, run_id)
                histograms, _ = await exchange.reply(run_id, [SbtHistograms], sent, REPLY_TIMEOUT_S)
                splits = await asyncio.to_thread(bank.choose_splits, histograms)
                sent = await exchange.send(splits, run_id)
                split_rows, _ = await exchange.reply(run_id, [SbtSplitRows], sent, REPLY_TIMEOUT_S)
                bank.apply_splits(split_rows)
            bank.end_tree()
        await exchange.send(bank.finish(model_name, version_label), run_id)
    finally:
        await exchange.stop()
        bank.close()
    half = SbtBankHalf(product, bank.model, version_label)
    fingerprint = data.fingerprint()
    version = registry.register(
        model_name=model_name, algorithm=f"federated SecureBoost ({params.loss}, Paillier 2048)",
        parameters={**asdict(params), "partner_version": version_label}, feature_names=[*FEATURE_NAMES, "partner_features"],
        rows_learned=len(data.join_ids), iterations=params.trees, fingerprint=fingerprint, operator=operator,
        started_at=started_at, metrics={f"{params.loss}_last_tree": bank.tree_losses[-1]}, checkpoint=half.to_bytes(),
    )
    registry.record_deployment(version.service_number, operator=operator, target=socket.gethostname())
    return TrainingResult(version, len(data.join_ids), int(data.labels.sum()), params.trees, False, time.monotonic() - started,
                          list(bank.tree_losses))
