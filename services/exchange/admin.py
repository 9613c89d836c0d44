"""What the command line asks of the exchange: a federated training job with the live partner.

`cipherstream train-federated` reads the bank's labelled history (JSON lines) with `read_history`
and runs `train_federated` (logistic regression) or `train_secureboost`, which open Redis (the
join ids) and the model registry for the job and close them when it ends.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis

from services.core.config import Settings
from services.exchange.sbt_training import train_secureboost_over_exchange
from services.exchange.training import LabelledRow, TrainingResult, train_federated_over_exchange
from services.models.bank_features import FEATURE_NAMES
from services.models.fedlr import DEFAULT_LEARNING_RATE, DEFAULT_MAX_EPOCHS, Mode
from services.models.registry import ModelRegistry
from services.models.secureboost import BoostingParameters


def parse_history(lines: Iterable[str]) -> list[LabelledRow]:
    """Rows of `{customer_id, features: {name: value}, label: 0|1}`, features in FEATURE_NAMES order;
    blank lines are skipped. A bad line raises ValueError (bad JSON or number), KeyError (a missing
    field or feature) or TypeError.

    >>> features = {name: 1.0 for name in FEATURE_NAMES}
    >>> [row] = parse_history([json.dumps({"customer_id": "C1", "features": features, "label": 1}), ""])
    >>> row.customer_id, row.label, row.features.shape == (len(FEATURE_NAMES),)
    ('C1', 1, True)
    >>> parse_history(['{"customer_id": "C1", "features": {}, "label": 0}'])
    Traceback (most recent call last):
    ...
    KeyError: 'age'
    """
    rows = [json.loads(line) for line in lines if line.strip()]
    return [LabelledRow(row["customer_id"], np.array([float(row["features"][name]) for name in FEATURE_NAMES]),
                        int(row["label"])) for row in rows]


def read_history(path: Path) -> list[LabelledRow]:
    """`parse_history` of a file; OSError when it cannot be read."""
    return parse_history(path.read_text().splitlines())


async def train_federated(settings: Settings, product: str, history: list[LabelledRow], *, mode: Mode = "minibatch",
                          epochs: int = DEFAULT_MAX_EPOCHS, batch_size: int | None = None,
                          learning_rate: float = DEFAULT_LEARNING_RATE) -> TrainingResult:
    """Train `product`'s federated model with the partner over the exchange topics (the partner
    service must run) and register the bank's half; scoring picks it up within its refresh."""
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    registry = ModelRegistry(settings.database_url.get_secret_value())
    try:
        return await train_federated_over_exchange(settings, redis, registry, product, history, mode=mode,
                                                   epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)
    finally:
        registry.close()
        await redis.aclose()


async def train_secureboost(settings: Settings, product: str, history: list[LabelledRow],
                            parameters: BoostingParameters) -> TrainingResult:
    """Train `product`'s SecureBoost model with the partner over the exchange topics (the partner service
    must run) and register the bank's half; scoring serves it for the products configured for SecureBoost."""
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    registry = ModelRegistry(settings.database_url.get_secret_value())
    try:
        return await train_secureboost_over_exchange(settings, redis, registry, product, history, parameters=parameters)
    finally:
        registry.close()
        await redis.aclose()
