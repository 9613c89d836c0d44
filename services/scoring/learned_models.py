"""What scoring's learner holds: the models it teaches and where in `responses` they stand.

Per product, the bank-only online model (`propensity.<product>`, river) and, where a federated
model is deployed, its bank half learning online (`fedlr.<product>`,
services/models/online_federated.py). With them, the position: the next offset to learn per
partition of `responses`. A checkpoint is one registry transaction (`ModelRegistry.checkpoint`):
a version of every model that learned since the last one, each the child of the version before
it, and the position, which only moves from the generation this learner read. Everything the
models hold is therefore exactly the records before the position, and restoring a checkpoint and
reading on from its offsets learns each record once.

A restore takes each model's latest version. That is the position's own version, unless a
version was registered since by someone else (a training job, or the first version a serving
replica registers for a model that had none), which the learner then learns on from; a sealed
window of the federated half it replaces is dropped with it (the partner moved to the new half
with the same job).
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import numpy as np

from services.core import metrics
from services.core.logs import facts
from services.models.bank_features import FEATURE_NAMES
from services.models.federated import PARTNER_REASON, federated_model_name
from services.models.fedlr import DEFAULT_MIN_BATCH_SIZE
from services.models.online_federated import OnlineHalf, Window
from services.models.registry import DataFingerprint, LearnerPosition, ModelRegistry, ModelVersion, NewVersion
from services.scoring.live_models import BANK_ALGORITHM, bank_parameters, model_name
from services.scoring.model import ProductModel

log = logging.getLogger(__name__)
ONLINE_ALGORITHM = "federated logistic regression (online from responses, Paillier 2048)"
OPERATOR = "scoring-learner"
RESTORE_ATTEMPTS = 5


@dataclass(frozen=True)
class OnlineSettings:
    learning_rate: float
    l2: float
    window_rows: int


@dataclass
class Lineage:
    """Where one model stands in the registry: the version it learns on from, and what it learned since."""

    parent: ModelVersion | None
    fingerprint: DataFingerprint
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    changed: bool = False


@dataclass
class LearnedModels:
    learner: str
    generation: int
    offsets: dict[int, int]
    bank: dict[str, ProductModel]
    online: dict[str, OnlineHalf]
    lineage: dict[str, Lineage]  # by model name
    rows_since_checkpoint: int = 0
    saved_offsets: dict[int, int] = field(default_factory=dict)

    @classmethod
    def restore(cls, registry: ModelRegistry, learner: str, products: tuple[str, ...],
                online: OnlineSettings) -> LearnedModels:
        """The learner's last checkpoint: its position and each model's latest version."""
        for _ in range(RESTORE_ATTEMPTS):
            position = registry.position(learner)
            restored = cls._read(registry, learner, position, products, online)
            # Read twice: a checkpoint that landed between the position and the versions would mix two.
            again = registry.position(learner)
            if (again.generation if again else 0) == restored.generation:
                return restored
        raise RuntimeError(f"learner {learner}: the checkpoint kept moving while it was restored")

    @classmethod
    def _read(cls, registry: ModelRegistry, learner: str, position: LearnerPosition | None,
              products: tuple[str, ...], online: OnlineSettings) -> LearnedModels:
        if online.window_rows < DEFAULT_MIN_BATCH_SIZE:
            raise ValueError(f"online windows of {online.window_rows} rows: the minimum is {DEFAULT_MIN_BATCH_SIZE}, "
                             "or the partner's gradient of a window would reveal single residuals")
        offsets = dict(position.offsets) if position else {}
        models = cls(learner, position.generation if position else 0, offsets, {}, {}, {}, saved_offsets=dict(offsets))
        saved = position.versions if position else {}
        for product in products:
            name = model_name(product)
            latest = registry.latest(name)
            models.bank[product] = ProductModel.from_bytes(latest[1]) if latest and latest[1] else ProductModel(product)
            models._follow(name, latest[0] if latest else None, saved)
            name = federated_model_name(product)
            latest = registry.latest(name)
            if latest is not None and latest[1]:
                half = OnlineHalf.from_bytes(latest[1], online.learning_rate, online.l2, online.window_rows)
                if "windows_applied" not in latest[0].parameters:
                    half.rows_learned = latest[0].rows_learned  # a trained half: online rows add to its training rows
                models.online[product] = half
                models._follow(name, latest[0], saved)
        return models

    def _follow(self, name: str, version: ModelVersion | None, saved: dict[str, str]) -> None:
        self.lineage[name] = Lineage(version, DataFingerprint(version.data_fingerprint if version else ""))
        if version is not None and saved.get(name) not in (None, version.service_number):
            log.info("learning on from a version registered meanwhile",
                     extra=facts(model=name, service_number=version.service_number))

    # --- learning ---------------------------------------------------------------------------------------
    def learn_bank(self, product: str, features: np.ndarray, converted: bool, at_ms: int) -> None:
        model = self.bank[product]
        model.learn(features, converted)
        lineage = self.lineage[model_name(product)]
        lineage.fingerprint.update(features.tolist(), converted, at_ms)
        lineage.changed = True
        self.rows_since_checkpoint += 1
        metrics.ROWS_LEARNED.labels(model_name(product)).inc()
        metrics.MODEL_AUC.labels(product).set(model.auc.get())
        metrics.MODEL_KS.labels(product).set(model.ks())

    def learn_online(self, product: str, features: np.ndarray, partial_score: float, converted: bool, join_id: str,
                     at_ms: int) -> Window | None:
        """One step of the federated bank half; the window it sealed, if this row filled one."""
        half = self.online[product]
        half.learn_one(features, partial_score, converted, join_id)
        name = federated_model_name(product)
        lineage = self.lineage[name]
        lineage.fingerprint.update([*features.tolist(), partial_score], converted, at_ms)
        lineage.changed = True
        metrics.ROWS_LEARNED.labels(name).inc()
        return half.seal()

    def confirm_window(self, product: str, window: int, partner_version: str) -> None:
        self.online[product].confirm(window, partner_version)
        self.lineage[federated_model_name(product)].changed = True
        metrics.ONLINE_WINDOWS.labels(federated_model_name(product)).inc()

    def sealed_windows(self) -> list[tuple[str, Window]]:
        return [(product, half.sealed) for product, half in self.online.items() if half.sealed is not None]

    @property
    def moved(self) -> bool:
        """Whether there is anything to checkpoint: a model learned, or the position advanced."""
        return any(lineage.changed for lineage in self.lineage.values()) or self.offsets != self.saved_offsets

    # --- checkpoint ---------------------------------------------------------------------------------------
    def checkpoint(self, registry: ModelRegistry) -> list[ModelVersion]:
        """Save every changed model and the position in one transaction (StaleVersionError: another
        writer was first; this learner must restore)."""
        changed = [name for name, lineage in self.lineage.items() if lineage.changed]
        kept = {name: lineage.parent.service_number for name, lineage in self.lineage.items()
                if not lineage.changed and lineage.parent is not None}
        position, registered = registry.checkpoint(self.learner, self.generation, self.offsets, kept,
                                                   [self._new_version(name) for name in changed])
        for version in registered:
            lineage = self.lineage[version.model_name]
            lineage.parent, lineage.changed, lineage.started_at = version, False, dt.datetime.now(dt.UTC)
        self.generation, self.saved_offsets, self.rows_since_checkpoint = position.generation, dict(self.offsets), 0
        return registered

    def _new_version(self, name: str) -> NewVersion:
        lineage = self.lineage[name]
        parent = lineage.parent.service_number if lineage.parent else None
        product = name.split(".", 1)[1]
        if name == model_name(product):
            model = self.bank[product]
            return NewVersion(name, BANK_ALGORITHM, bank_parameters(model), list(FEATURE_NAMES), model.rows_learned,
                              model.rows_learned, lineage.fingerprint, OPERATOR, lineage.started_at,
                              {"auc_prequential": model.auc.get(), "drifts_detected": model.drifts_detected},
                              model.to_bytes(), parent)
        half = self.online[product]
        parameters = {"mode": "online", "learning_rate": half.learning_rate, "l2": half.l2,
                      "window_rows": half.window_rows, "min_batch_size": DEFAULT_MIN_BATCH_SIZE,
                      "partner_version": half.half.partner_version, "windows_applied": half.applied,
                      "window_sealed": half.sealed.index if half.sealed else None}
        return NewVersion(name, ONLINE_ALGORITHM, parameters, [*FEATURE_NAMES, PARTNER_REASON], half.rows_learned,
                          half.applied, lineage.fingerprint, OPERATOR, lineage.started_at, {}, half.to_bytes(), parent)
