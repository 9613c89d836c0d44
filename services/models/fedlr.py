"""Federated logistic regression, vertical and two-party (FATE's hetero LR without an arbiter).

The bank (guest) holds the labels y, its features x_b, its weights w_b and bias, and the Paillier
private key. The partner (host) holds its features x_p and its weights w_p. Rows are the join
ids both sides got from PSI. The model is p = sigmoid(w_b . x_b + bias + w_p . x_p), fitted by
gradient descent on mean log loss (+ l2/2 |w|^2 on the weights, not the bias).

Per step (a batch of rows the bank picked): 0, the bank sends `TrainingStart` once (over the
topics inside `TrainingRun`) and a `BatchPlan` per batch; 1, the partner answers `BatchScores`,
w_p . x_p per row; 2, the bank sends `EncryptedResiduals`, [[sigmoid(z_i) - y_i]]; 3, the
partner answers `MaskedGradient`, [[sum_i r_i q_ij + m_j]] with m_j uniform mod n; 4, the bank
sends `UnmaskedGradient`, the decryption plus optional noise. What each message carries and what
its receiver learns: the `fedlr` rows of the table of message kinds, services/protocol/kinds.py
(rendered in README.md).

The partner then removes its masks and updates w_p; the bank updates w_b and the bias from the
same residuals in clear, in its own house. At prediction the partner sends w_p . x_p per join id
(`BatchScores`) and the bank adds its share and applies the sigmoid.

Neither side ever holds the other's rows: labels and bank features stay with the bank (only
ciphertexts of residuals leave it), partner features and weights stay with the partner (only
partial scores and masked ciphertexts leave it). The known leak is the partner's gradient: with
one row it is r_i x_i, which gives away r_i and so the label. We guard it with a minimum batch
size (the bank refuses to plan a smaller batch, `BatchTooSmallError`) and optional Gaussian
noise the bank adds before returning the gradient, calibrated to one label's influence:
changing y_i moves sum_i r_i q_ij by q_ij, so the L2 sensitivity is (2^(bits-1) - 1) sqrt(F)
in quantised units and sigma = sensitivity sqrt(2 ln(1.25/delta)) / epsilon gives
(epsilon, delta) label privacy per step. Across steps the partner also sees how its own
gradients change (linear equations in the residuals), which the minimum batch size and the
noise bound in the same way. Beyond that each side learns the other's row and feature counts.

Step 3 is the cost centre: `services.models.kernel` (joint buckets over the partner's
features quantised to `feature_bits`; the partner keeps each feature's scale, so the gradient
decodes exactly to sum_i r_i q_ij and the partner trains on q_ij * scale_j).

Modes: "batch" (one step per epoch over every row), "minibatch" (steps of `batch_size` rows),
"online" (per-event SGD: the bank updates w_b after every row; the partner's step aggregates a
window of `batch_size >= min_batch_size` rows, so it never sees one row's residual).

Raw data in, sound model out, without hand tuning: each party trains on its own features as its
`Preparation` (services/models/preparation.py) turns them out, fitted locally and never sent;
both take the step `step_size(start, epoch)` = learning_rate / (1 + learning_rate_decay * epoch)
from the `TrainingStart` they share and the epoch every message names; and the bank stops when
its epoch loss has stopped improving (`StoppingRule`). On prepared features a first step of 2
decaying as 1/(1 + epoch), in batches of `default_batch_size`, lands within 0.002 AUC of central
LR on FATE's breast and default_credit and on raw-shaped data (services/models/raw_shaped.py)
with no setting changed; strongly correlated features may overshoot in the first epochs until the
decay brings the loss down. A full-batch run wants `learning_rate_decay=0`: without sampling
noise there is nothing to damp.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ids = [f"c{i}" for i in range(400)]
>>> x_bank, x_partner = rng.normal(size=(400, 2)), rng.normal(size=(400, 3))
>>> y = (x_bank[:, 0] + x_partner[:, 0] + 0.3 * rng.normal(size=400) > 0).astype(int)
>>> bank = BankParty(ids, y, x_bank * 1_000 + 5_000, encrypted=False, min_batch_size=50, workers=1)
>>> partner = PartnerParty(ids, x_partner, workers=1)
>>> from services.core.avro import AvroCodec, SchemaStore
>>> from services.core.config import REPO_ROOT
>>> codec = AvroCodec(SchemaStore(REPO_ROOT / "schemas"))
>>> report = train_federated(bank, partner, codec=codec)
>>> probabilities = predict(bank, partner, ids)
>>> bool(((probabilities > 0.5) == y).mean() > 0.85), report.converged
(True, True)
"""
from __future__ import annotations

import itertools
import math
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from gmpy2 import mpz

from services.core.avro import AvroCodec
from services.core.errors import CipherstreamError, ConfigError, ValidationError
from services.crypto.paillier import (
    PaillierPrivateKey,
    PaillierPublicKey,
    encode_fixed,
    generate_keypair,
    signed_int,
)
from services.models.kernel import signed_weighted_products
from services.models.preparation import Preparation
from services.models.wire import PLAINTEXT_MODULUS, Transcript, Wire
from services.models.workers import WorkerPool
from services.protocol.exchange_messages import (
    BAD_FEDLR_MESSAGE,
    BatchPlan,
    BatchScores,
    EncryptedResiduals,
    MaskedGradient,
    TrainingStart,
    UnmaskedGradient,
)

Mode = Literal["batch", "minibatch", "online"]
MODES: tuple[str, ...] = ("batch", "minibatch", "online")
DEFAULT_MIN_BATCH_SIZE = 64
DEFAULT_FEATURE_BITS = 12
DEFAULT_LEARNING_RATE = 2.0
DEFAULT_LEARNING_RATE_DECAY = 1.0
MAX_BATCH_SIZE = 256
"""The default batch: rows / 8 between the minimum and this: at least 8 steps per epoch on a few hundred
rows; on many rows, 256-row steps, whose fixed cost per step (masks, decryption) is small beside the kernel."""
# 16^-8 = 2^-32: residuals in [-1, 1] keep 32 fractional bits; sums over 2^17 rows of 16-bit
# features stay below 2^66, far inside phe's signed range (n / 3).
DEFAULT_RESIDUAL_EXPONENT = -8
_BAD = BAD_FEDLR_MESSAGE


class BatchTooSmallError(CipherstreamError):
    """A batch below the minimum size would let the partner read single residuals (and so labels)."""


@dataclass(frozen=True)
class GaussianNoise:
    """(epsilon, delta) per step for one label's influence on the partner's gradient (Gaussian mechanism).

    >>> round(GaussianNoise(1.0, 1e-5).sigma(feature_bits=8, features=4), 1)
    1230.6
    """

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not (self.epsilon > 0 and 0 < self.delta < 1):
            raise ConfigError(f"noise needs epsilon > 0 and 0 < delta < 1, got {self.epsilon}, {self.delta}")

    def sigma(self, feature_bits: int, features: int) -> float:
        """Standard deviation in units of sum_i r_i q_ij (quantised features, residuals in [-1, 1])."""
        sensitivity = ((1 << (feature_bits - 1)) - 1) * math.sqrt(features)
        return sensitivity * math.sqrt(2 * math.log(1.25 / self.delta)) / self.epsilon


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def step_size(start: TrainingStart, epoch: int) -> float:
    """The step both parties take in `epoch`, from the settings they share: neither has to tell the other.

    >>> step_size(TrainingStart.of(35, 2.0, 0.0, False, learning_rate_decay=1.0), 3)
    0.5
    """
    return start.learning_rate / (1.0 + start.learning_rate_decay * epoch)


def default_batch_size(rows: int, min_batch_size: int = DEFAULT_MIN_BATCH_SIZE) -> int:
    """rows / 8, at least `min_batch_size`, at most MAX_BATCH_SIZE.

    >>> default_batch_size(426), default_batch_size(22_500), default_batch_size(1_200)
    (64, 256, 150)
    """
    return max(min_batch_size, min(MAX_BATCH_SIZE, rows // 8))


@dataclass(frozen=True)
class StoppingRule:
    """Stop once the epoch loss improved by less than `tolerance` (relative) in each of the last
    `patience` epochs; the epoch cap is the driver's `epochs`.

    >>> StoppingRule().should_stop([0.69, 0.5, 0.4997, 0.4995])
    True
    >>> StoppingRule().should_stop([0.69, 0.5, 0.4997, 0.45])
    False
    """

    tolerance: float = 1e-3
    patience: int = 2

    def __post_init__(self) -> None:
        if not (self.tolerance >= 0 and self.patience >= 1):
            raise ConfigError(f"a stopping rule needs tolerance >= 0 and patience >= 1, got {self.tolerance}, "
                              f"{self.patience}")

    def should_stop(self, losses: Sequence[float]) -> bool:
        if len(losses) <= self.patience:
            return False
        recent = losses[-self.patience - 1:]
        return all(before - after < self.tolerance * abs(before) for before, after in itertools.pairwise(recent))


def _index_rows(join_ids: Sequence[str]) -> dict[str, int]:
    index = {join_id: row for row, join_id in enumerate(join_ids)}
    if len(index) != len(join_ids):
        raise ValidationError("join ids must be unique")
    return index


def _rows_of(index: dict[str, int], join_ids: Sequence[str], who: str) -> np.ndarray:
    try:
        return np.fromiter((index[join_id] for join_id in join_ids), dtype=np.int64, count=len(join_ids))
    except KeyError as exc:
        raise ValidationError(f"the {who} holds no row for join id {exc.args[0]!r}", reason="unknown_join_id") from exc


def _prepared(features: np.ndarray, rows: int, who: str, preparation: Preparation | None) -> tuple[Preparation, np.ndarray]:
    """The party's preparation (fitted on these rows unless given) and its features as it trains on them."""
    matrix = np.asarray(features, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != rows:
        raise ValidationError(f"the {who}'s features must be a (rows, features) matrix with {rows} rows")
    if np.isinf(matrix).any():
        raise ValidationError(f"the {who}'s features must be finite or NaN (missing)")
    preparation = preparation if preparation is not None else Preparation.fit(matrix)
    prepared = preparation.transform(matrix)
    if not np.isfinite(prepared).all():
        raise ValidationError(f"the {who}'s prepared features are not finite")
    return preparation, prepared


@dataclass
class _Step:
    """What the bank keeps between sending residuals and answering the masked gradient."""

    epoch: int
    batch_index: int
    rows: int


class BankParty:
    """The guest: labels, bank features, the Paillier private key, w_b and the bias.

    `features` are the bank's raw values (NaN where missing); the party trains on them as
    `preparation` turns them out: fitted here on these rows unless given (fit one on the training
    rows alone with `Preparation.fit` when these rows include test rows). It never leaves the bank.
    """

    def __init__(self, join_ids: Sequence[str], labels: np.ndarray, features: np.ndarray, *,
                 preparation: Preparation | None = None, private_key: PaillierPrivateKey | None = None,
                 encrypted: bool = True, learning_rate: float = DEFAULT_LEARNING_RATE,
                 learning_rate_decay: float = DEFAULT_LEARNING_RATE_DECAY, l2: float = 0.0,
                 min_batch_size: int = DEFAULT_MIN_BATCH_SIZE, noise: GaussianNoise | None = None,
                 residual_exponent: int = DEFAULT_RESIDUAL_EXPONENT, workers: int | None = None,
                 shuffle_seed: int | None = None, noise_rng: np.random.Generator | None = None) -> None:
        self.join_ids = tuple(join_ids)
        self._row_of = _index_rows(self.join_ids)
        self.labels = np.asarray(labels, dtype=np.float64)
        if self.labels.shape != (len(self.join_ids),) or not np.isin(self.labels, (0.0, 1.0)).all():
            raise ValidationError("labels must be one 0 or 1 per join id")
        self.preparation, self.features = _prepared(features, len(self.join_ids), "bank", preparation)
        if min_batch_size < 1 or learning_rate <= 0 or learning_rate_decay < 0 or l2 < 0:
            raise ConfigError("min_batch_size >= 1, learning_rate > 0, learning_rate_decay >= 0 and l2 >= 0 are required")
        self.cipher = BankCipher(private_key=private_key, encrypted=encrypted, noise=noise,
                                 residual_exponent=residual_exponent, workers=workers, noise_rng=noise_rng)
        self.encrypted = encrypted
        self.private_key = self.cipher.private_key
        self.public_key = self.cipher.public_key
        self.learning_rate = learning_rate
        self.learning_rate_decay = learning_rate_decay
        self.l2 = l2
        self._start = TrainingStart.of(self.public_key.n, learning_rate, l2, encrypted,
                                       learning_rate_decay=learning_rate_decay)
        self.min_batch_size = min_batch_size
        self.noise = noise
        self.residual_exponent = residual_exponent
        self.weights = np.zeros(self.features.shape[1])
        self.bias = 0.0
        self._shuffle = random.Random(shuffle_seed) if shuffle_seed is not None else random.SystemRandom()
        self._step: _Step | None = None
        self.epoch_losses: list[float] = []
        self._loss_sum = 0.0
        self._loss_rows = 0

    # --- set-up and planning -------------------------------------------------------------------------------
    def start(self) -> TrainingStart:
        return self._start

    def plan_epoch(self, epoch: int, batch_size: int, join_ids: Sequence[str] | None = None) -> list[BatchPlan]:
        """Shuffle the rows into batches of `batch_size`; a short last batch joins the one before it."""
        ids = list(join_ids if join_ids is not None else self.join_ids)
        if len(ids) < self.min_batch_size:
            raise BatchTooSmallError(f"{len(ids)} rows cannot make one batch of at least {self.min_batch_size}")
        if batch_size < self.min_batch_size:
            raise BatchTooSmallError(f"batch size {batch_size} is below the minimum of {self.min_batch_size}: "
                                     "a small batch's gradient would reveal single residuals, hence labels")
        _rows_of(self._row_of, ids, "bank")
        self._shuffle.shuffle(ids)
        starts = list(range(0, len(ids), batch_size))
        if len(starts) > 1 and len(ids) - starts[-1] < self.min_batch_size:
            starts.pop()
        bounds = [*starts[1:], len(ids)]
        return [BatchPlan(epoch, index, tuple(ids[start:end])) for index, (start, end) in enumerate(zip(starts, bounds))]

    # --- step 2 ------------------------------------------------------------------------------------------
    def residuals_step(self, plan: BatchPlan, partner_scores: BatchScores, online: bool = False) -> EncryptedResiduals:
        """Add our share to the partner's, compute residuals, update w_b, send the residuals encrypted."""
        if len(plan.join_ids) < self.min_batch_size:
            raise BatchTooSmallError(f"batch of {len(plan.join_ids)} rows is below the minimum {self.min_batch_size}")
        if (partner_scores.epoch, partner_scores.batch_index, partner_scores.join_ids) != (
                plan.epoch, plan.batch_index, plan.join_ids):
            raise ValidationError("partial scores do not answer the current batch plan", reason=_BAD)
        rows = _rows_of(self._row_of, plan.join_ids, "bank")
        features, labels = self.features[rows], self.labels[rows]
        partner_share = np.asarray(partner_scores.scores)
        rate = step_size(self._start, plan.epoch)
        residuals = self._online_residuals(features, labels, partner_share, rate) if online else \
            self._batch_residuals(features, labels, partner_share, rate)
        self._step = _Step(plan.epoch, plan.batch_index, len(rows))
        return self.cipher.encrypt_residuals(plan.epoch, plan.batch_index, residuals)

    def _track_loss(self, probabilities: np.ndarray, labels: np.ndarray) -> None:
        clipped = np.clip(probabilities, 1e-12, 1 - 1e-12)
        self._loss_sum += float(-(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)).sum())
        self._loss_rows += labels.size

    def _batch_residuals(self, features: np.ndarray, labels: np.ndarray, partner_share: np.ndarray,
                         rate: float) -> np.ndarray:
        probabilities = sigmoid(features @ self.weights + self.bias + partner_share)
        self._track_loss(probabilities, labels)
        residuals: np.ndarray = probabilities - labels
        self.weights -= rate * (features.T @ residuals / labels.size + self.l2 * self.weights)
        self.bias -= rate * float(residuals.mean())
        return residuals

    def _online_residuals(self, features: np.ndarray, labels: np.ndarray, partner_share: np.ndarray,
                          rate: float) -> np.ndarray:
        """Per-event SGD on the bank's half; the residuals (each at its own moment) go to the partner together."""
        residuals = np.empty(labels.size)
        for row in range(labels.size):
            probability = float(sigmoid(np.array(features[row] @ self.weights + self.bias + partner_share[row])))
            self._track_loss(np.array([probability]), labels[row:row + 1])
            residuals[row] = probability - labels[row]
            self.weights -= rate * (residuals[row] * features[row] + self.l2 * self.weights)
            self.bias -= rate * residuals[row]
        return residuals

    def end_epoch(self) -> float:
        loss = self._loss_sum / max(self._loss_rows, 1)
        self.epoch_losses.append(loss)
        self._loss_sum, self._loss_rows = 0.0, 0
        return loss

    # --- step 4 ------------------------------------------------------------------------------------------
    def decrypt_step(self, masked: MaskedGradient) -> UnmaskedGradient:
        """Decrypt the partner's masked gradient (values we cannot read) and add the calibrated noise."""
        step = self._step
        if step is None or (masked.epoch, masked.batch_index) != (step.epoch, step.batch_index):
            raise ValidationError("masked gradient for a batch the bank has not sent residuals for", reason=_BAD)
        unmasked = self.cipher.unmask(masked)
        self._step = None
        return unmasked

    # --- prediction ----------------------------------------------------------------------------------------
    def predict_proba(self, join_ids: Sequence[str], partner_scores: BatchScores) -> np.ndarray:
        if partner_scores.join_ids != tuple(join_ids):
            raise ValidationError("partial scores are not for the asked join ids", reason=_BAD)
        rows = _rows_of(self._row_of, join_ids, "bank")
        return sigmoid(self.features[rows] @ self.weights + self.bias + np.asarray(partner_scores.scores))

    def close(self) -> None:
        self.cipher.close()


class BankCipher:
    """The bank's Paillier side of a step, whoever plans the rows (training here, online windows in
    scoring): it encrypts residuals under the bank's key and decrypts the partner's masked gradient,
    adding the calibrated noise if any. `encrypted=False` is the plaintext protocol check.

    >>> cipher = BankCipher(encrypted=False, workers=1)
    >>> residuals = cipher.encrypt_residuals(0, 7, np.array([0.25, -0.5]))
    >>> residuals.batch_index, [v if v < cipher.public_key.n // 2 else v - cipher.public_key.n for v in residuals.values]
    (7, [1073741824, -2147483648])
    """

    def __init__(self, *, private_key: PaillierPrivateKey | None = None, encrypted: bool = True,
                 noise: GaussianNoise | None = None, residual_exponent: int = DEFAULT_RESIDUAL_EXPONENT,
                 workers: int | None = None, noise_rng: np.random.Generator | None = None) -> None:
        self.encrypted = encrypted
        self.private_key = private_key if private_key is not None else (generate_keypair()[1] if encrypted else None)
        self.public_key = (self.private_key.public_key if self.private_key is not None
                           else PaillierPublicKey(PLAINTEXT_MODULUS))
        self.noise = noise
        self.residual_exponent = residual_exponent
        self._noise_rng = noise_rng or np.random.default_rng(secrets.randbits(128))
        self._pool = WorkerPool(workers) if encrypted else None

    def start(self, learning_rate: float, l2: float) -> TrainingStart:
        return TrainingStart.of(self.public_key.n, learning_rate, l2, self.encrypted)

    def encrypt_residuals(self, epoch: int, batch_index: int, residuals: np.ndarray) -> EncryptedResiduals:
        """[[r_i]] for each residual, fixed point at `residual_exponent`."""
        encodings = [encode_fixed(float(r), self.residual_exponent, self.public_key) for r in residuals]
        if self.encrypted:
            assert self._pool is not None
            values = [int(c) for c in self._pool.encrypt(self.public_key, encodings)]
            width = (self.public_key.nsquare.bit_length() + 7) // 8
        else:
            values, width = encodings, (self.public_key.n.bit_length() + 7) // 8
        return EncryptedResiduals.of(epoch, batch_index, self.encrypted, width, values, self.residual_exponent)

    def unmask(self, masked: MaskedGradient) -> UnmaskedGradient:
        """Decrypt the partner's masked gradient (values we cannot read) and add the calibrated noise."""
        if masked.encrypted != self.encrypted or not 1 <= masked.feature_bits <= 24:
            raise ValidationError("masked gradient flags do not match this training", reason=_BAD)
        if self.encrypted:
            assert self._pool is not None and self.private_key is not None
            values = self._pool.decrypt(self.private_key, masked.values)
        else:
            values = [value % self.public_key.n for value in masked.values]
        if self.noise is not None:
            sigma = self.noise.sigma(masked.feature_bits, len(values))
            scale = 16 ** -self.residual_exponent
            noise = np.rint(self._noise_rng.normal(0.0, sigma, size=len(values)) * scale).astype(object)
            values = [(value + int(extra)) % self.public_key.n for value, extra in zip(values, noise)]
        width = (self.public_key.n.bit_length() + 7) // 8
        return UnmaskedGradient.of(masked.epoch, masked.batch_index, self.encrypted, width, values)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None




@dataclass
class _PendingGradient:
    epoch: int
    batch_index: int
    rows: int
    exponent: int
    masks: list[int]


@dataclass
class _Quantised:
    """Features as q_ij = round(x_ij / scale_j) in (-2^(bits-1), 2^(bits-1)); the partner trains on q * scale."""

    values: np.ndarray
    scales: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray, bits: int) -> _Quantised:
        top = (1 << (bits - 1)) - 1
        peaks = np.abs(features).max(axis=0) if features.size else np.zeros(features.shape[1])
        scales = np.where(peaks > 0, peaks / top, 1.0)
        return cls(np.clip(np.rint(features / scales), -top, top).astype(np.int64), scales)


class PartnerParty:
    """The host: partner features, w_p, and the masks that keep its gradient from the bank.

    `features` are the partner's raw values (NaN where missing), prepared as `preparation` says
    (fitted here on these rows unless given), as on the bank's side; it never leaves the partner.
    """

    def __init__(self, join_ids: Sequence[str], features: np.ndarray, *, preparation: Preparation | None = None,
                 feature_bits: int = DEFAULT_FEATURE_BITS, workers: int | None = None,
                 mask_below: Callable[[int], int] = secrets.randbelow) -> None:
        self.join_ids = tuple(join_ids)
        self._row_of = _index_rows(self.join_ids)
        self.preparation, self.features = _prepared(features, len(self.join_ids), "partner", preparation)
        if not 2 <= feature_bits <= 16:
            raise ConfigError(f"feature_bits must be 2 to 16, not {feature_bits}")
        self.feature_bits = feature_bits
        self._quantised = _Quantised.of(self.features, feature_bits)
        self.training_features = self._quantised.values * self._quantised.scales
        self.weights = np.zeros(self.features.shape[1])
        self._mask_below = mask_below
        self._workers = workers
        self._pool: WorkerPool | None = None
        self._settings: TrainingStart | None = None
        self._plan: BatchPlan | None = None
        self._pending: _PendingGradient | None = None

    def on_training_start(self, start: TrainingStart) -> None:
        self._settings = start
        if self._settings.encrypted and self._pool is None:
            self._pool = WorkerPool(self._workers)

    @property
    def public_key(self) -> PaillierPublicKey:
        if self._settings is None:
            raise ValidationError("training has not started (no TrainingStart received)", reason=_BAD)
        return PaillierPublicKey(self._settings.modulus)

    # --- step 1 ------------------------------------------------------------------------------------------
    def scores_step(self, plan: BatchPlan) -> BatchScores:
        """w_p . x_p for the planned rows (with the features the partner trains on)."""
        rows = _rows_of(self._row_of, plan.join_ids, "partner")
        self._plan = plan
        scores = self.training_features[rows] @ self.weights
        return BatchScores(plan.epoch, plan.batch_index, plan.join_ids, tuple(scores.tolist()))

    # --- step 3 ------------------------------------------------------------------------------------------
    def gradient_step(self, residuals: EncryptedResiduals) -> MaskedGradient:
        """[[sum_i r_i q_ij]] per feature by the kernel, plus a uniform mask, re-encrypted."""
        settings, plan = self._settings, self._plan
        if settings is None or plan is None or (residuals.epoch, residuals.batch_index) != (plan.epoch, plan.batch_index):
            raise ValidationError("encrypted residuals for a batch the partner has not scored", reason=_BAD)
        ciphertexts = residuals.values
        if len(ciphertexts) != len(plan.join_ids) or residuals.encrypted != settings.encrypted:
            raise ValidationError(f"{len(ciphertexts)} residuals for a batch of {len(plan.join_ids)} rows",
                                  reason=_BAD)
        quantised = self._quantised.values[_rows_of(self._row_of, plan.join_ids, "partner")]
        key = self.public_key
        masks = [self._mask_below(key.n) for _ in range(quantised.shape[1])]
        if settings.encrypted:
            assert self._pool is not None
            nsquare = mpz(key.nsquare)
            sums = signed_weighted_products([mpz(c) for c in ciphertexts], quantised, nsquare, self.feature_bits,
                                            pool=self._pool)
            # Enc(m_j) brings a fresh obfuscator, so the bank cannot link the result to its own randomness.
            encrypted_masks = self._pool.encrypt(key, masks)
            values = [int(s * m % nsquare) for s, m in zip(sums, encrypted_masks)]
            width = (key.nsquare.bit_length() + 7) // 8
        else:
            values = [(s + m) % key.n for s, m in zip(plaintext_weighted_sums(ciphertexts, quantised, key), masks)]
            width = (key.n.bit_length() + 7) // 8
        self._pending = _PendingGradient(plan.epoch, plan.batch_index, len(plan.join_ids), residuals.exponent, masks)
        self._plan = None
        return MaskedGradient.of(plan.epoch, plan.batch_index, self.feature_bits, settings.encrypted, width, values)

    @property
    def last_batch_shape(self) -> tuple[int, int]:
        """(rows, features) of the gradient awaiting step 4: rows x features ciphertext-scalar products."""
        if self._pending is None:
            return 0, 0
        return self._pending.rows, len(self._pending.masks)

    # --- after step 4 -----------------------------------------------------------------------------------------
    def update_step(self, unmasked: UnmaskedGradient) -> np.ndarray:
        """Remove the masks, decode the gradient, update w_p; returns the gradient used."""
        pending, settings = self._pending, self._settings
        if pending is None or settings is None or (unmasked.epoch, unmasked.batch_index) != (
                pending.epoch, pending.batch_index):
            raise ValidationError("unmasked gradient for a batch the partner did not send", reason=_BAD)
        masked_sums = unmasked.values
        if len(masked_sums) != len(pending.masks):
            raise ValidationError(f"{len(masked_sums)} gradient values for {len(pending.masks)} features",
                                  reason=_BAD)
        key = self.public_key
        try:
            sums = np.array([signed_int((value - mask) % key.n, key) for value, mask in zip(masked_sums, pending.masks)],
                            dtype=np.float64)
        except OverflowError as exc:
            raise ValidationError("gradient did not decode (wrong masks or a corrupted value)", reason=_BAD) from exc
        sums /= 16 ** -pending.exponent
        gradient = self._quantised.scales * sums / pending.rows + settings.l2 * self.weights
        self.weights -= step_size(settings, pending.epoch) * gradient
        self._pending = None
        return gradient

    # --- prediction ----------------------------------------------------------------------------------------
    def partial_scores(self, join_ids: Sequence[str]) -> BatchScores:
        """w_p . x_p per join id: all the bank ever gets from the partner at scoring time."""
        rows = _rows_of(self._row_of, join_ids, "partner")
        scores = self.features[rows] @ self.weights
        return BatchScores(0, 0, tuple(join_ids), tuple(scores.tolist()))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def plaintext_weighted_sums(encodings: Sequence[int], quantised: np.ndarray, key: PaillierPublicKey) -> list[int]:
    """sum_i r_i q_ij mod n, exactly, for the plaintext protocol check (what the kernel's ciphertexts decrypt to).

    >>> key = PaillierPublicKey(10007 * 10009)
    >>> plaintext_weighted_sums([3, key.n - 2], np.array([[1, -4], [5, 2]]), key) == [(3 - 10) % key.n, -16 % key.n]
    True
    """
    signed = np.array([signed_int(int(e), key) for e in encodings], dtype=np.int64)
    # Split residuals in 16-bit halves so every int64 partial sum stays exact (|r| <= 2^33, |q| < 2^15).
    low, high = signed & 0xFFFF, signed >> 16
    quantised = np.asarray(quantised, dtype=np.int64)
    low_sums, high_sums = quantised.T @ low, quantised.T @ high
    return [((int(h) << 16) + int(lo)) % key.n for h, lo in zip(high_sums.tolist(), low_sums.tolist())]


@dataclass
class TrainingReport:
    """What the driver measured: per-epoch seconds and mean log loss, bytes each way, seconds per step;
    `converged` when the stopping rule ended the run before the epoch cap `epochs`."""

    mode: str
    epochs: int
    batch_size: int = 0
    converged: bool = False
    batches: int = 0
    epoch_seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    bytes_to_partner: int = 0
    bytes_to_bank: int = 0
    step_seconds: dict[str, float] = field(default_factory=dict)

    def timed(self, step: str, started: float) -> None:
        self.step_seconds[step] = self.step_seconds.get(step, 0.0) + time.perf_counter() - started



DEFAULT_MAX_EPOCHS = 60
DEFAULT_STOPPING = StoppingRule()


def train_federated(bank: BankParty, partner: PartnerParty, mode: Mode = "minibatch", epochs: int = DEFAULT_MAX_EPOCHS,
                    batch_size: int | None = None, *, codec: AvroCodec, join_ids: Sequence[str] | None = None,
                    stopping: StoppingRule | None = DEFAULT_STOPPING, transcript: Transcript | None = None,
                    after_step: Callable[[int, int], None] | None = None) -> TrainingReport:
    """Run the protocol in this process, passing every message through `codec` as over the exchange
    topics: each side gets what the other's bytes decode to, and the report counts those bytes.

    At most `epochs` epochs, fewer when `stopping` says the loss has settled (None: exactly
    `epochs`); `batch_size` None is `default_batch_size` of the training rows.
    `transcript`, if given, receives ("to_partner" | "to_bank", payload bytes) for every message.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if epochs < 1:
        raise ConfigError("epochs must be at least 1")
    rows = list(join_ids if join_ids is not None else bank.join_ids)
    batch_rows = len(rows) if mode == "batch" else (
        batch_size if batch_size is not None else default_batch_size(len(rows), bank.min_batch_size))
    report = TrainingReport(mode, epochs, batch_rows)

    wire = Wire(codec, transcript)
    to_partner, to_bank = wire.to_partner, wire.to_bank

    partner.on_training_start(to_partner(bank.start()))
    for epoch in range(epochs):
        started = time.perf_counter()
        for plan in bank.plan_epoch(epoch, batch_rows, rows):
            at = time.perf_counter()
            scores = to_bank(partner.scores_step(to_partner(plan)))
            report.timed("1_partner_scores", at)
            at = time.perf_counter()
            residuals = to_partner(bank.residuals_step(plan, scores, online=mode == "online"))
            report.timed("2_bank_residuals", at)
            at = time.perf_counter()
            masked = to_bank(partner.gradient_step(residuals))
            report.timed("3_partner_gradient", at)
            at = time.perf_counter()
            unmasked = to_partner(bank.decrypt_step(masked))
            report.timed("4_bank_decrypt", at)
            at = time.perf_counter()
            partner.update_step(unmasked)
            report.timed("4_partner_update", at)
            report.batches += 1
            if after_step is not None:
                after_step(epoch, plan.batch_index)
        report.losses.append(bank.end_epoch())
        report.epoch_seconds.append(time.perf_counter() - started)
        if stopping is not None and stopping.should_stop(report.losses):
            report.converged = True
            break
    report.bytes_to_partner, report.bytes_to_bank = wire.bytes_to_partner, wire.bytes_to_bank
    return report


def predict(bank: BankParty, partner: PartnerParty, join_ids: Sequence[str]) -> np.ndarray:
    """P(y = 1) per join id: the partner sends w_p . x_p, the bank adds its share and applies the sigmoid."""
    return bank.predict_proba(join_ids, partner.partial_scores(join_ids))
