"""Evaluating a new partner on exported data, before a project: what `cipherstream federated evaluate` runs.

Input: the two halves of a vertically split data set in FATE's CSV layout (services/models/datasets.py:
the bank's `id,y,x0..`, the partner's `id,x0..`), raw, with missing values. Both parties run in this
one process but keep to the real protocols, every message through the Avro codec as over the exchange
topics: PSI aligns the ids (services/crypto/psi/: each side learns only the shared ids' join ids),
the bank splits the aligned rows into training and test rows (stratified), each party fits its own
`Preparation` on its training rows, and the model is trained by its protocol (`TRAINERS`: federated
LR under Paillier, `services/models/fedlr.py`). Reported on the test rows: AUC and KS of the
federated model, of central LR on the same joined, prepared rows (what neither party could run
alone, the ceiling), and of the bank's prepared features alone (what the partner adds); with the
rows aligned, seconds and bytes.

>>> from services.core.avro import AvroCodec, SchemaStore
>>> from services.core.config import REPO_ROOT
>>> from services.models.raw_shaped import raw_shaped
>>> guest, host = raw_shaped(bank_rows=1_500, seed=4)
>>> result = evaluate(guest, host, EvaluationSettings(encrypted=False), AvroCodec(SchemaStore(REPO_ROOT / "schemas")))
>>> result.rows["aligned"], abs(result.federated.auc - result.central.auc) < 0.02, result.federated.auc > result.bank_only.auc
(1125, True, True)
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from services.core.avro import AvroCodec
from services.core.errors import ConfigError, ValidationError
from services.crypto.paillier import generate_keypair
from services.crypto.psi import PsiParty, PsiPartyKey, PsiRole, PsiSessionParams, wire
from services.crypto.psi.link import MAX_POINTS_PER_MESSAGE
from services.models.datasets import GuestTable, HostTable, stratified_split
from services.models.fedlr import DEFAULT_MAX_EPOCHS, BankParty, PartnerParty, predict, train_federated
from services.models.preparation import Preparation

MIN_TEST_PER_CLASS = 5
"""A test AUC needs both classes; below this many of either it says little."""


@dataclass(frozen=True)
class EvaluationSettings:
    test_fraction: float = 0.3
    seed: int = 0
    encrypted: bool = True  # False: the same protocol and bytes with plaintext math, for a first look
    key_bits: int = 2048
    max_epochs: int = DEFAULT_MAX_EPOCHS
    workers: int | None = None  # each party's process pool; None: one per core

    def __post_init__(self) -> None:
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"test fraction must be between 0 and 1, not {self.test_fraction}")
        if self.key_bits < 1024 or self.max_epochs < 1:
            raise ConfigError("key bits must be at least 1024 and max epochs at least 1")


@dataclass(frozen=True)
class Alignment:
    """PSI's outcome on each side: own id -> join id, for the shared ids only."""

    bank: Mapping[str, str]
    partner: Mapping[str, str]
    bytes_to_partner: int
    bytes_to_bank: int
    seconds: float


def align(bank_ids: Sequence[str], partner_ids: Sequence[str], codec: AvroCodec) -> Alignment:
    """Both sides of PSI in this process, each message encoded and decoded as the topics carry it."""
    started = time.perf_counter()
    sent = {"to_partner": 0, "to_bank": 0}

    def cross(direction: str, payload: bytes) -> bytes:
        sent[direction] += len(payload)
        return payload

    params = PsiSessionParams.new()
    bank = PsiParty(PsiPartyKey.generate(PsiRole.BANK, params))
    partner_params = wire.decode_session(codec, cross("to_partner", wire.encode(codec, params)))
    partner = PsiParty(PsiPartyKey.generate(PsiRole.PARTNER, partner_params))
    for chunk in bank.blind(list(bank_ids)).chunks(MAX_POINTS_PER_MESSAGE):
        blinded = wire.decode_blinded(codec, cross("to_partner", wire.encode(codec, chunk)))
        bank.receive(wire.decode_answer(codec, cross("to_bank", wire.encode(codec, partner.reblind(blinded)))))
    for chunk in partner.blind(list(partner_ids)).chunks(MAX_POINTS_PER_MESSAGE):
        blinded = wire.decode_blinded(codec, cross("to_bank", wire.encode(codec, chunk)))
        partner.receive(wire.decode_answer(codec, cross("to_partner", wire.encode(codec, bank.reblind(blinded)))))
    return Alignment(bank.intersect().join_ids, partner.intersect().join_ids, sent["to_partner"], sent["to_bank"],
                     time.perf_counter() - started)


@dataclass(frozen=True)
class TrainingTask:
    """What each party holds for one evaluation: its aligned rows by join id (raw), its preparation
    fitted on its training rows, and which join ids train and which test (the bank's split)."""

    bank_join_ids: tuple[str, ...]
    labels: np.ndarray
    bank_features: np.ndarray
    bank_preparation: Preparation
    partner_join_ids: tuple[str, ...]
    partner_features: np.ndarray
    partner_preparation: Preparation
    train: list[str]
    test: list[str]


@dataclass(frozen=True)
class TrainedModel:
    test_scores: np.ndarray  # in the order of task.test
    details: dict[str, Any]
    bytes_to_partner: int
    bytes_to_bank: int


Trainer = Callable[[TrainingTask, EvaluationSettings, AvroCodec], TrainedModel]


def train_lr(task: TrainingTask, settings: EvaluationSettings, codec: AvroCodec) -> TrainedModel:
    """Federated LR at its defaults (services/models/fedlr.py), Paillier unless `settings.encrypted` is off."""
    private_key = generate_keypair(settings.key_bits)[1] if settings.encrypted else None
    bank = BankParty(task.bank_join_ids, task.labels, task.bank_features, preparation=task.bank_preparation,
                     private_key=private_key, encrypted=settings.encrypted, workers=settings.workers,
                     shuffle_seed=settings.seed)
    partner = PartnerParty(task.partner_join_ids, task.partner_features, preparation=task.partner_preparation,
                           workers=settings.workers)
    try:
        report = train_federated(bank, partner, epochs=settings.max_epochs, codec=codec, join_ids=task.train)
        scores = predict(bank, partner, task.test)
    finally:
        bank.close()
        partner.close()
    details = {"epochs": len(report.losses), "converged": report.converged, "batch_size": report.batch_size,
               "losses": [round(loss, 6) for loss in report.losses], "encrypted": settings.encrypted,
               "key_bits": settings.key_bits if settings.encrypted else None}
    return TrainedModel(scores, details, report.bytes_to_partner, report.bytes_to_bank)


TRAINERS: dict[str, Trainer] = {"lr": train_lr}
"""The models `evaluate` can train, by the name `--model` takes."""


@dataclass(frozen=True)
class Score:
    auc: float
    ks: float

    @classmethod
    def of(cls, labels: np.ndarray, scores: np.ndarray) -> Score:
        """Test AUC and the Kolmogorov-Smirnov statistic, max over thresholds of TPR - FPR.

        >>> Score.of(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9]))
        Score(auc=0.75, ks=0.5)
        """
        from sklearn.metrics import roc_auc_score, roc_curve

        false_positive, true_positive, _ = roc_curve(labels, scores)
        return cls(round(float(roc_auc_score(labels, scores)), 5), round(float(np.max(true_positive - false_positive)), 5))


@dataclass(frozen=True)
class Evaluation:
    model: str
    rows: dict[str, int]
    federated: Score
    central: Score
    bank_only: Score
    training: dict[str, Any]
    preparation: dict[str, dict[str, int]]
    seconds: dict[str, float]
    bytes: dict[str, int]
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def central_scores(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray) -> np.ndarray:
    """scikit-learn's LogisticRegression (its defaults) trained where all the columns are in one place."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=5000).fit(train_features, train_labels)
    scores: np.ndarray = model.predict_proba(test_features)[:, 1]
    return scores


def evaluate(guest: GuestTable, host: HostTable, settings: EvaluationSettings, codec: AvroCodec,
             model: str = "lr") -> Evaluation:
    """Align, split, prepare, train `model` by its protocol and score it against the baselines."""
    trainer = TRAINERS.get(model)
    if trainer is None:
        raise ConfigError(f"unknown model {model!r}; this build trains {', '.join(sorted(TRAINERS))}")
    started = time.perf_counter()
    alignment = align(guest.join_ids, host.join_ids, codec)
    guest_name, host_name = guest.source or "the guest file", host.source or "the host file"
    if not alignment.bank:
        raise ValidationError(f"no id of {guest_name} is in {host_name} (column 'id'): the intersection is empty",
                              reason="empty_intersection")
    bank_rows = [row for row, own_id in enumerate(guest.join_ids) if own_id in alignment.bank]
    partner_rows = [row for row, own_id in enumerate(host.join_ids) if own_id in alignment.partner]
    bank_join_ids = tuple(alignment.bank[guest.join_ids[row]] for row in bank_rows)
    partner_join_ids = tuple(alignment.partner[host.join_ids[row]] for row in partner_rows)
    labels = guest.labels[bank_rows]
    _check_both_classes(labels, settings.test_fraction, guest_name)
    train, test = stratified_split(bank_join_ids, labels, settings.test_fraction, settings.seed)

    # Each party fits its preparation on its own training rows (the partner knows them from the run's start).
    bank_row_of = {join_id: row for row, join_id in enumerate(bank_join_ids)}
    partner_row_of = {join_id: row for row, join_id in enumerate(partner_join_ids)}
    bank_features, partner_features = guest.features[bank_rows], host.features[partner_rows]
    bank_train, bank_test = [bank_row_of[j] for j in train], [bank_row_of[j] for j in test]
    partner_train, partner_test = [partner_row_of[j] for j in train], [partner_row_of[j] for j in test]
    bank_preparation = Preparation.fit(bank_features[bank_train])
    partner_preparation = Preparation.fit(partner_features[partner_train])
    task = TrainingTask(bank_join_ids, labels, bank_features, bank_preparation, partner_join_ids, partner_features,
                        partner_preparation, train, test)
    training_started = time.perf_counter()
    trained = trainer(task, settings, codec)
    training_seconds = time.perf_counter() - training_started

    test_labels = labels[bank_test]
    prepared_bank, prepared_partner = bank_preparation.transform(bank_features), partner_preparation.transform(partner_features)
    joined_train = np.hstack([prepared_bank[bank_train], prepared_partner[partner_train]])
    joined_test = np.hstack([prepared_bank[bank_test], prepared_partner[partner_test]])
    central = central_scores(joined_train, labels[bank_train], joined_test)
    bank_only = central_scores(prepared_bank[bank_train], labels[bank_train], prepared_bank[bank_test])
    return Evaluation(
        model=model,
        rows={"guest": len(guest.join_ids), "host": len(host.join_ids), "aligned": len(bank_join_ids),
              "train": len(train), "test": len(test), "train_positives": int(labels[bank_train].sum()),
              "test_positives": int(test_labels.sum())},
        federated=Score.of(test_labels, trained.test_scores), central=Score.of(test_labels, central),
        bank_only=Score.of(test_labels, bank_only), training=trained.details,
        preparation={"bank": bank_preparation.describe(), "partner": partner_preparation.describe()},
        seconds={"psi": round(alignment.seconds, 2), "training": round(training_seconds, 2),
                 "total": round(time.perf_counter() - started, 2)},
        bytes={"psi_to_partner": alignment.bytes_to_partner, "psi_to_bank": alignment.bytes_to_bank,
               "training_to_partner": trained.bytes_to_partner, "training_to_bank": trained.bytes_to_bank},
        files={"guest": guest.source, "host": host.source},
    )


def _check_both_classes(labels: np.ndarray, test_fraction: float, guest_name: str) -> None:
    for label in (0, 1):
        in_test = round(int((labels == label).sum()) * test_fraction)
        if in_test < MIN_TEST_PER_CLASS:
            raise ValidationError(f"{guest_name}, column 'y': the aligned rows have {int((labels == label).sum())} "
                                  f"with label {label}, too few for {MIN_TEST_PER_CLASS} among the test rows",
                                  reason="too_few_labels")
