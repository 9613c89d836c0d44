"""The models scoring serves: one online bank-only model per product (checkpointed to the
registry as it learns) and, where one is deployed, the bank half of a federated model.

A product whose model has not learned enough of both outcomes to serve (`ProductModel.ready`:
no history was trained for it, services/scoring/bootstrap.py) is named in a log line at start and
scored by the fallback until it has: the bank-wide prior conversion rate (the conversions over
the rows of every product model that is ready, else PRIOR_CONVERSION_RATE) with the single reason
code `no_model_yet`, under its own registry version `propensity.<product>.fallback`, so every such
score says so in its model label and service number. Meanwhile the product's model learns from
responses as every model does."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import time
from dataclasses import dataclass, field

import numpy as np

from services.core import metrics
from services.core.logs import facts
from services.models.bank_features import FEATURE_NAMES
from services.models.federated import LiveFederated, load_federated
from services.models.registry import DataFingerprint, ModelRegistry, ModelVersion
from services.protocol.stream_messages import ReasonCode
from services.scoring.model import PRIOR_CONVERSION_RATE, ProductModel

log = logging.getLogger(__name__)
FEDERATED_REFRESH_S = 30.0
FALLBACK_REASONS: tuple[ReasonCode, ...] = (ReasonCode("no_model_yet", 0.0),)


def model_name(product: str) -> str:
    return f"propensity.{product}"


def fallback_model_name(product: str) -> str:
    return f"{model_name(product)}.fallback"


@dataclass(frozen=True)
class Fallback:
    """The propensity a product is scored with before its model may serve, and its registry version."""

    propensity: float
    version: ModelVersion

    @property
    def label(self) -> str:
        return f"{self.version.model_name}@v{self.version.version}"


@dataclass
class LiveModel:
    """A product model being served, with the registry version its scores carry."""

    model: ProductModel
    version: ModelVersion
    fingerprint: DataFingerprint
    started_at: dt.datetime
    learned_since_checkpoint: int = 0
    fallback: Fallback | None = None

    def serving_fallback(self) -> Fallback | None:
        """The fallback while the model has not learned enough to serve; None from then on."""
        return self.fallback if self.fallback is not None and not self.model.ready else None


@dataclass
class LiveModels:
    registry: ModelRegistry
    live: dict[str, LiveModel] = field(default_factory=dict)
    federated: dict[str, LiveFederated] = field(default_factory=dict)
    federated_loaded_at: float = 0.0
    checkpoint_every_rows: int = 200
    model_refresh_s: float = FEDERATED_REFRESH_S
    operator: str = "scoring-service"

    @classmethod
    def start(cls, registry: ModelRegistry, products: tuple[str, ...], checkpoint_every_rows: int = 200,
              model_refresh_s: float = FEDERATED_REFRESH_S) -> LiveModels:
        """Restore each product's latest checkpoint (or start fresh) and register this run's version."""
        models = cls(registry, checkpoint_every_rows=checkpoint_every_rows, model_refresh_s=model_refresh_s)
        for product in products:
            latest = registry.latest(model_name(product))
            model = ProductModel.from_bytes(latest[1]) if latest and latest[1] else ProductModel(product)
            previous = latest[0] if latest else None
            fingerprint = DataFingerprint(previous.data_fingerprint if previous else "")
            models.live[product] = LiveModel(model, previous, fingerprint, dt.datetime.now(dt.UTC))  # type: ignore[arg-type]
            models.checkpoint(product)
            registry.record_deployment(models.live[product].version.service_number, operator=models.operator,
                                       target=socket.gethostname())
        models.start_fallbacks()
        models.federated = load_federated(registry, products)
        models.federated_loaded_at = time.monotonic()
        return models

    def start_fallbacks(self) -> None:
        """Register and name the fallback of every product whose model may not serve yet."""
        ready = [live.model for live in self.live.values() if live.model.ready]
        rows = sum(model.rows_learned for model in ready)
        prior = sum(model.learned_counts()[0] for model in ready) / rows if rows else PRIOR_CONVERSION_RATE
        for product, live in self.live.items():
            if live.model.ready:
                continue
            version = self.registry.register(
                model_name=fallback_model_name(product), algorithm="fallback: the bank-wide prior conversion rate",
                parameters={"propensity": prior, "reason_code": FALLBACK_REASONS[0].feature,
                            "prior_from": [model.product for model in ready] or "PRIOR_CONVERSION_RATE"},
                feature_names=[], rows_learned=rows, iterations=0, fingerprint=DataFingerprint(""),
                operator=self.operator, started_at=dt.datetime.now(dt.UTC),
            )
            self.registry.record_deployment(version.service_number, operator=self.operator, target=socket.gethostname())
            live.fallback = Fallback(prior, version)
            log.warning("no trained model: scored by the fallback until it has learned enough", extra=facts(
                product=product, fallback=live.fallback.label, propensity=round(prior, 4),
                rows_learned=live.model.rows_learned, positives_learned=live.model.learned_counts()[0]))

    async def refresh_federated(self) -> None:
        """Pick up newly trained federated versions without a restart."""
        if time.monotonic() - self.federated_loaded_at >= self.model_refresh_s:
            self.federated_loaded_at = time.monotonic()
            self.federated = await asyncio.to_thread(load_federated, self.registry, tuple(self.live))

    def checkpoint(self, product: str) -> None:
        live = self.live[product]
        model = live.model
        live.version = self.registry.register(
            model_name=model_name(product), algorithm="river.LogisticRegression(online SGD)",
            parameters={"learning_rate": model.learning_rate, "l2": model.l2, "scaler": "StandardScaler"},
            feature_names=list(FEATURE_NAMES), rows_learned=model.rows_learned, iterations=model.rows_learned,
            fingerprint=live.fingerprint, operator=self.operator, started_at=live.started_at,
            metrics={"auc_prequential": model.auc.get(), "drifts_detected": model.drifts_detected},
            checkpoint=model.to_bytes(), parent_service_number=live.version.service_number if live.version else None,
        )
        live.learned_since_checkpoint = 0
        live.started_at = dt.datetime.now(dt.UTC)

    def learn_one(self, product: str, features: np.ndarray, converted: bool, occurred_at_ms: int) -> None:
        live = self.live[product]
        live.model.learn(features, converted)
        live.fingerprint.update(features.tolist(), converted, occurred_at_ms)
        live.learned_since_checkpoint += 1
        metrics.MODEL_AUC.labels(product).set(live.model.auc.get())
        metrics.MODEL_KS.labels(product).set(live.model.ks())

    async def checkpoint_due(self) -> None:
        for product, live in self.live.items():
            if live.learned_since_checkpoint >= self.checkpoint_every_rows:
                started = time.perf_counter()
                await asyncio.to_thread(self.checkpoint, product)
                log.info("model checkpoint", extra=facts(product=product, service_number=live.version.service_number,
                                                          rows=live.model.rows_learned,
                                                          seconds=round(time.perf_counter() - started, 3)))
