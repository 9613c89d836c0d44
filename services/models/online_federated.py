"""The bank's half of a federated model learning online from responses (fedlr's "online" mode,
one response at a time, as the responses arrive).

Per terminal response of an aligned customer the bank takes one SGD step on its own half:
r = sigmoid(w_b . x_b + b + s_p) - y, with s_p the partner's partial score stored for that customer
(w_p . x_p of the partner half's current version), then w_b -= lr (r x_b + l2 w_b), b -= lr r. The
residual goes into the open window with the customer's join id. A window of `window_rows`
responses (at least fedlr's minimum batch size, so the partner never sees one row's residual) is
sealed, saved with the bank's checkpoint, and only then sent: the partner's step over it
(BatchPlan -> BatchScores -> EncryptedResiduals -> MaskedGradient -> UnmaskedGradient, over the
exchange topics: services/scoring/online_windows.py) moves w_p once. Windows are numbered from 1
within the partner half's lineage (services/protocol/partner_versions.py); the half's
`partner_version` names the last window the partner confirmed, so a restored checkpoint says
which window is next, and a sealed window in it is sent again, never learned again.

>>> from services.models.bank_features import FEATURE_NAMES
>>> from services.models.preparation import Preparation
>>> width = len(FEATURE_NAMES)
>>> half = BankHalf("travel", np.zeros(width), Preparation.identity(width), 0.0, "fedlr.travel@r1")
>>> online = OnlineHalf(half, learning_rate=0.5, l2=0.0, window_rows=2)
>>> first = np.eye(width)[0]
>>> round(online.learn_one(first, 0.0, converted=True, join_id="a"), 3)
-0.5
>>> online.seal() is None, online.half.weights[:2].tolist()
(True, [0.25, 0.0])
>>> _ = online.learn_one(np.eye(width)[1], 0.0, converted=False, join_id="b")
>>> window = online.seal()
>>> window.index, window.join_ids, online.applied
(1, ['a', 'b'], 0)
>>> online.confirm(1, "fedlr.travel@r1#w1"); online.applied, online.sealed is None
(1, True)
>>> restored = OnlineHalf.from_bytes(online.to_bytes(), 0.5, 0.0, 2)
>>> restored.to_bytes() == online.to_bytes(), restored.applied
(True, 1)
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from services.core.errors import ConfigError, ValidationError
from services.models.federated import BankHalf
from services.models.fedlr import DEFAULT_MIN_BATCH_SIZE, sigmoid
from services.protocol.partner_versions import lineage_of, window_of


@dataclass
class Window:
    """One window of responses for the partner's step: who (join ids) and the residual of each, in order."""

    index: int
    join_ids: list[str]
    residuals: list[float]


@dataclass
class OnlineHalf:
    """The bank's half as it learns: the half scoring serves, plus the windows' state."""

    half: BankHalf
    learning_rate: float
    l2: float
    window_rows: int = DEFAULT_MIN_BATCH_SIZE
    rows_learned: int = 0
    sealed: Window | None = None  # saved, sent (or to be sent), not yet confirmed by the partner
    open: Window = field(default_factory=lambda: Window(0, [], []))

    def __post_init__(self) -> None:
        if self.window_rows < 1 or self.learning_rate <= 0 or self.l2 < 0:
            raise ConfigError("an online window needs window_rows >= 1, learning_rate > 0 and l2 >= 0")

    @property
    def applied(self) -> int:
        """The last window the partner confirmed (0: none on top of the trained half)."""
        return window_of(self.half.partner_version)

    @property
    def lineage(self) -> str:
        return lineage_of(self.half.partner_version)

    def learn_one(self, features: np.ndarray, partial_score: float, converted: bool, join_id: str) -> float:
        """One SGD step on the bank's half; the residual joins the open window and is returned."""
        if self.sealed is not None:
            raise ValidationError("a sealed window must be confirmed before the half learns on", reason="window_pending")
        half = self.half
        prepared = half.prepared(features)
        probability = float(sigmoid(np.array(half.intercept + float(prepared @ half.weights) + partial_score)))
        residual = probability - float(converted)
        weights = half.weights - self.learning_rate * (residual * prepared + self.l2 * half.weights)
        self.half = replace(half, weights=weights, intercept=half.intercept - self.learning_rate * residual)
        self.open.join_ids.append(join_id)
        self.open.residuals.append(residual)
        self.rows_learned += 1
        return residual

    def seal(self) -> Window | None:
        """The open window, numbered, once it holds `window_rows` responses (None before)."""
        if self.sealed is not None or len(self.open.join_ids) < self.window_rows:
            return None
        self.sealed = Window(self.applied + 1, self.open.join_ids, self.open.residuals)
        self.open = Window(0, [], [])
        return self.sealed

    def confirm(self, window: int, partner_version: str) -> None:
        """The partner has applied `window` and labelled its half `partner_version`."""
        if self.sealed is None or self.sealed.index != window or window_of(partner_version) != window \
                or lineage_of(partner_version) != self.lineage:
            raise ValidationError(f"partner confirmed window {window} as {partner_version!r}, "
                                  f"not the sealed {self.sealed.index if self.sealed else None} of {self.lineage!r}",
                                  reason="bad_fedlr_message")
        self.half = replace(self.half, partner_version=partner_version)
        self.sealed = None

    def to_bytes(self) -> bytes:
        values = json.loads(self.half.to_bytes())
        values["online"] = {"learning_rate": self.learning_rate, "l2": self.l2, "window_rows": self.window_rows,
                            "rows_learned": self.rows_learned, "sealed": asdict(self.sealed) if self.sealed else None,
                            "open": asdict(self.open)}
        return json.dumps(values).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, learning_rate: float, l2: float, window_rows: int) -> OnlineHalf:
        """A checkpoint as saved (online state and settings included) or a trained half (starting
        online now with these settings)."""
        half = BankHalf.from_bytes(raw)
        online = json.loads(raw).get("online")
        if online is None:
            return cls(half, learning_rate, l2, window_rows)
        sealed = online["sealed"]
        return cls(half, float(online["learning_rate"]), float(online["l2"]), int(online["window_rows"]),
                   int(online["rows_learned"]), Window(**sealed) if sealed else None, Window(**online["open"]))
