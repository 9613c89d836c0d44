"""The models scoring serves: per product, the latest registered version of the bank-only online
model and, where one is deployed, of the federated model's bank half.

Every replica serves registered versions only, never a model it holds in memory, so each score
carries the service number of exactly the version it was scored with. The versions come from the
learner (services/scoring/learner.py: one replica learns, all serve) and from training jobs; a
replica looks for new ones every `model_refresh_s` and records a deployment for each it takes up.

A product whose model has not learned enough of both outcomes to serve (`ProductModel.ready`:
no history was trained for it, services/scoring/bootstrap.py) is named in a log line at start and
scored by the fallback until a version that has arrives: the bank-wide prior conversion rate (the
conversions over the rows of every product model that is ready, else PRIOR_CONVERSION_RATE) with
the single reason code `no_model_yet`, under its own registry version `propensity.<product>.fallback`,
so every such score says so in its model label and service number.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import socket
import time
from dataclasses import dataclass, field

from services.core.logs import facts
from services.models.bank_features import FEATURE_NAMES
from services.models.federated import LiveFederated, load_federated
from services.models.registry import DataFingerprint, ModelRegistry, ModelVersion, StaleVersionError
from services.protocol.stream_messages import ReasonCode
from services.scoring.model import PRIOR_CONVERSION_RATE, ProductModel

log = logging.getLogger(__name__)
FEDERATED_REFRESH_S = 30.0
BANK_ALGORITHM = "river.LogisticRegression(online SGD)"
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
        return self.version.label


def bank_parameters(model: ProductModel) -> dict[str, object]:
    return {"learning_rate": model.learning_rate, "l2": model.l2, "scaler": "StandardScaler"}


@dataclass
class LiveModel:
    """A product model being served, with the registry version its scores carry."""

    model: ProductModel
    version: ModelVersion
    fallback: Fallback | None = None

    def serving_fallback(self) -> Fallback | None:
        """The fallback while the model has not learned enough to serve; None from then on."""
        return self.fallback if self.fallback is not None and not self.model.ready else None


@dataclass
class LiveModels:
    registry: ModelRegistry
    live: dict[str, LiveModel] = field(default_factory=dict)
    federated: dict[str, LiveFederated] = field(default_factory=dict)
    loaded_at: float = 0.0
    model_refresh_s: float = FEDERATED_REFRESH_S
    operator: str = "scoring-service"

    @classmethod
    def start(cls, registry: ModelRegistry, products: tuple[str, ...],
              model_refresh_s: float = FEDERATED_REFRESH_S) -> LiveModels:
        """Serve each product's latest version (registering an untrained first one where there is none)."""
        models = cls(registry, model_refresh_s=model_refresh_s)
        for product in products:
            models.live[product] = models._deploy(product, models._latest_or_first(product))
        models.start_fallbacks()
        models.federated = load_federated(registry, products)
        models.loaded_at = time.monotonic()
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

    def _latest_or_first(self, product: str) -> tuple[ModelVersion, bytes | None]:
        latest = self.registry.latest(model_name(product))
        if latest is not None:
            return latest
        model = ProductModel(product)
        try:  # only if no version exists: replicas starting together register one first version between them
            version = self.registry.register(
                model_name=model_name(product), algorithm=BANK_ALGORITHM, parameters=bank_parameters(model),
                feature_names=list(FEATURE_NAMES), rows_learned=0, iterations=0, fingerprint=DataFingerprint(),
                operator=self.operator, started_at=dt.datetime.now(dt.UTC), checkpoint=model.to_bytes(),
                only_if_latest=True)
            return version, model.to_bytes()
        except StaleVersionError:
            found = self.registry.latest(model_name(product))
            assert found is not None  # the version another replica just registered
            return found

    def _deploy(self, product: str, found: tuple[ModelVersion, bytes | None]) -> LiveModel:
        version, checkpoint = found
        model = ProductModel.from_bytes(checkpoint) if checkpoint else ProductModel(product)
        self.registry.record_deployment(version.service_number, operator=self.operator, target=socket.gethostname())
        return LiveModel(model, version)

    async def refresh(self) -> None:
        """Take up versions registered since the last look (the learner's checkpoints, trained halves)."""
        if time.monotonic() - self.loaded_at >= self.model_refresh_s:
            self.loaded_at = time.monotonic()
            # Built in a thread, swapped in here: a batch being scored never sees a half-made dict.
            self.live, self.federated = await asyncio.to_thread(self._reloaded)

    def _reloaded(self) -> tuple[dict[str, LiveModel], dict[str, LiveFederated]]:
        live = dict(self.live)
        for product, current in self.live.items():
            if self.registry.latest_service_number(model_name(product)) != current.version.service_number:
                latest = self.registry.latest(model_name(product))
                if latest is not None:
                    # The fallback stays with the product: it serves until a version has learned enough.
                    live[product] = dataclasses.replace(self._deploy(product, latest), fallback=current.fallback)
                    log.info("serving a new version", extra=facts(product=product,
                                                                  service_number=latest[0].service_number))
        federated = load_federated(self.registry, tuple(self.live))
        for product, half in federated.items():
            current = self.federated.get(product)
            if current is None or current.version.service_number != half.version.service_number:
                self.registry.record_deployment(half.version.service_number, operator=self.operator,
                                                target=socket.gethostname())
        return live, federated
