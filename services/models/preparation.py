"""A party's local preparation of its own features, fitted on its own training rows.

Raw bank and bureau data are skewed, heavy-tailed, in units of thousands, with missing values
and constant columns; gradient descent on them diverges, and the partner's 12-bit quantisation
(services/models/fedlr.py) would round most of a heavy-tailed column to zero. So each party,
before training, fits a `Preparation` on its own training rows and trains on its output; the
same preparation, stored with the model version, turns raw rows into model inputs at scoring
time (the bank's in `BankHalf`, the partner's in its `PartnerModel`).

Nothing of it crosses to the other party: not the medians, quantiles, means or scales, not which
columns were dropped or logged. The other side sees only what it saw before (partial scores,
ciphertexts, masked gradients); the partner's output width is the feature count it already
reveals, now counted after preparation.

Per column, in this order (NaN is a missing value):

1. impute: a missing value becomes the column's median; a column missing in at least
   `MIN_MISSING_SHARE` of the training rows (and not in all) also gets an indicator column,
   1 where it was missing, because a missing bureau record is itself a fact about a person;
2. drop: a column with one value on the training rows carries nothing and is left out (its weight
   is zero; the partner's kernel does no work for it);
3. tails: a column of more than two values with |skewness| above `SKEW_LIMIT` goes through
   sign(x) log1p(|x|), kept only where that lowers |skewness| (amounts in the thousands become
   a few units; an already scaled column is left nearly as it was);
4. clip: at the training rows' `CLIP_QUANTILE` and 1 - `CLIP_QUANTILE` quantiles (at their
   minimum and maximum for two-valued columns), so an outlier at scoring time cannot move the
   log-odds further than the training rows did;
5. bins (optional, `bins=`): quantile bin index, for parties that want monotone steps;
6. standardise: (x - mean) / std over the training rows.

Each output column comes from one input column (`sources`), so contributions map back to the
input's names (reason codes).

>>> raw = np.array([[1_200.0, 0.0, 7.0], [56_000.0, 1.0, 7.0], [np.nan, 0.0, 7.0], [3_400.0, 1.0, 7.0]] * 5)
>>> preparation = Preparation.fit(raw)
>>> preparation.sources.tolist(), preparation.indicator.tolist()
([0, 0, 1], [False, True, False])
>>> prepared = preparation.transform(raw)
>>> prepared.shape, bool(np.allclose(prepared.mean(axis=0), 0)), bool(np.allclose(prepared.std(axis=0), 1))
((20, 3), True, True)
>>> Preparation.from_dict(preparation.to_dict()).transform(raw[:2]).tolist() == prepared[:2].tolist()
True
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.core.errors import ValidationError

SKEW_LIMIT = 1.0
"""|skewness| above which a column is logged: a lognormal with sigma 0.3 has 0.95, amounts have tens."""

CLIP_QUANTILE = 0.001
"""Clip at the 0.1 % and 99.9 % quantiles: a thousandth of the rows on each side, too few to matter
to the fit, enough to cap the one customer with a thousand times the typical balance."""

MIN_MISSING_SHARE = 0.01
"""A column missing in at least 1 % of the training rows gets a missing indicator."""

FORMAT = "cipherstream.preparation/1"


def signed_log1p(values: np.ndarray) -> np.ndarray:
    """sign(x) log(1 + |x|): the log of amounts, odd and continuous through zero.

    >>> signed_log1p(np.array([-9.0, 0.0, 9.0])).round(3).tolist()
    [-2.303, 0.0, 2.303]
    """
    result: np.ndarray = np.sign(values) * np.log1p(np.abs(values))
    return result


def skewness(values: np.ndarray) -> float:
    """Sample skewness E[(x - mean)^3] / std^3 (0 for a constant column).

    >>> round(skewness(np.array([0.0, 0.0, 0.0, 10.0])), 3)
    1.155
    """
    centred = values - values.mean()
    spread = float(np.sqrt(np.mean(centred**2)))
    return float(np.mean(centred**3) / spread**3) if spread > 0 else 0.0


@dataclass(frozen=True)
class _Column:
    """How one output column is made from its source column."""

    source: int
    indicator: bool
    median: float
    log: bool
    low: float
    high: float
    edges: tuple[float, ...]
    mean: float
    scale: float


def _fit_column(source: int, column: np.ndarray, *, skew_limit: float, clip_quantile: float,
                bins: int | None) -> _Column | None:
    """The value column for `column` (NaN where missing), or None when it is constant."""
    present = column[~np.isnan(column)]
    if present.size == 0:
        return None
    median = float(np.median(present))
    values = np.where(np.isnan(column), median, column)
    distinct = np.unique(values).size
    if distinct < 2:
        return None
    log = False
    if distinct > 2 and abs(skewness(values)) > skew_limit:
        logged = signed_log1p(values)
        if abs(skewness(logged)) < abs(skewness(values)):
            log, values = True, logged
    low, high = float(values.min()), float(values.max())
    if distinct > 2:
        q_low, q_high = (float(q) for q in np.quantile(values, [clip_quantile, 1 - clip_quantile]))
        if q_low < q_high:  # else most rows share one value: clipping would make the column constant
            low, high = q_low, q_high
    values = np.clip(values, low, high)
    edges: tuple[float, ...] = ()
    if bins is not None and distinct > 2:
        edges = tuple(float(e) for e in np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])))
        values = np.searchsorted(np.asarray(edges), values, side="right").astype(np.float64)
    scale = float(values.std())
    if scale == 0:
        return None
    return _Column(source, False, median, log, low, high, edges, float(values.mean()), scale)


def _fit_indicator(source: int, column: np.ndarray, min_missing_share: float) -> _Column | None:
    share = float(np.isnan(column).mean())
    if not min_missing_share <= share < 1:
        return None
    scale = float(np.sqrt(share * (1 - share)))
    return _Column(source, True, 0.0, False, 0.0, 1.0, (), share, scale)


@dataclass(frozen=True)
class Preparation:
    """One party's fitted preparation: `inputs` raw columns in, one output column per kept step.

    Arrays run over the output columns; `edges[j]` is empty where column j is not binned.
    """

    inputs: int
    sources: np.ndarray  # int: the raw column each output column comes from
    indicator: np.ndarray  # bool: the output is "1 where the source was missing"
    median: np.ndarray
    log: np.ndarray  # bool
    low: np.ndarray
    high: np.ndarray
    edges: tuple[tuple[float, ...], ...]
    mean: np.ndarray
    scale: np.ndarray

    @property
    def outputs(self) -> int:
        return int(self.sources.size)

    @classmethod
    def fit(cls, features: np.ndarray, *, bins: int | None = None, skew_limit: float = SKEW_LIMIT,
            clip_quantile: float = CLIP_QUANTILE, min_missing_share: float = MIN_MISSING_SHARE) -> Preparation:
        """Fit on a party's own training rows (NaN where a value is missing)."""
        matrix = _raw_matrix(features, None)
        if matrix.shape[0] < 2:
            raise ValidationError(f"a preparation needs at least 2 training rows, got {matrix.shape[0]}")
        if bins is not None and bins < 2:
            raise ValidationError(f"bins must be at least 2, not {bins}")
        columns: list[_Column] = []
        for source in range(matrix.shape[1]):
            column = matrix[:, source]
            value = _fit_column(source, column, skew_limit=skew_limit, clip_quantile=clip_quantile, bins=bins)
            indicator = _fit_indicator(source, column, min_missing_share)
            columns.extend(step for step in (value, indicator) if step is not None)
        return cls._of(matrix.shape[1], columns)

    @classmethod
    def standardisation(cls, mean: np.ndarray, scale: np.ndarray) -> Preparation:
        """Plain (x - mean) / scale on every column: what models saved before preparations had."""
        means, scales = np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=np.float64)
        columns = [_Column(j, False, 0.0, False, -np.inf, np.inf, (), float(m), float(s))
                   for j, (m, s) in enumerate(zip(means, scales, strict=True))]
        return cls._of(means.size, columns)

    @classmethod
    def identity(cls, inputs: int) -> Preparation:
        """Every column as it is (for data a party has prepared itself)."""
        return cls.standardisation(np.zeros(inputs), np.ones(inputs))

    @classmethod
    def _of(cls, inputs: int, columns: Sequence[_Column]) -> Preparation:
        def floats(name: str) -> np.ndarray:
            return np.array([getattr(c, name) for c in columns], dtype=np.float64)
        return cls(inputs, np.array([c.source for c in columns], dtype=np.int64),
                   np.array([c.indicator for c in columns], dtype=bool), floats("median"),
                   np.array([c.log for c in columns], dtype=bool), floats("low"), floats("high"),
                   tuple(c.edges for c in columns), floats("mean"), floats("scale"))

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Raw rows (NaN where missing) to model inputs, exactly as on the training rows."""
        matrix = _raw_matrix(features, self.inputs)
        raw = matrix[:, self.sources]
        missing = np.isnan(raw)
        values = np.where(missing, self.median, raw)
        values = np.where(self.log, signed_log1p(values), values)
        values = np.clip(values, self.low, self.high)
        for column, edges in enumerate(self.edges):
            if edges:
                values[:, column] = np.searchsorted(np.asarray(edges), values[:, column], side="right")
        values = np.where(self.indicator, missing, values)
        prepared: np.ndarray = (values - self.mean) / self.scale
        return prepared

    def per_input(self, output_values: np.ndarray) -> np.ndarray:
        """Sum output columns back onto their input columns (rows x outputs -> rows x inputs):
        a weighted indicator counts toward its source, a dropped column gets 0."""
        onto_inputs = np.zeros((self.outputs, self.inputs))
        onto_inputs[np.arange(self.outputs), self.sources] = 1.0
        summed: np.ndarray = np.asarray(output_values, dtype=np.float64) @ onto_inputs
        return summed

    def describe(self) -> dict[str, int]:
        """Counts for a model's parameters: what was done, not the fitted values."""
        return {"inputs": self.inputs, "outputs": self.outputs,
                "dropped": self.inputs - int(np.unique(self.sources).size),
                "logged": int(self.log.sum()), "missing_indicators": int(self.indicator.sum()),
                "binned": sum(1 for edges in self.edges if edges)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; infinite clip bounds are written as null."""
        def bounds(array: np.ndarray) -> list[float | None]:
            return [float(v) if np.isfinite(v) else None for v in array]
        return {"format": FORMAT, "inputs": self.inputs, "sources": self.sources.tolist(),
                "indicator": self.indicator.tolist(), "median": self.median.tolist(), "log": self.log.tolist(),
                "low": bounds(self.low), "high": bounds(self.high), "edges": [list(e) for e in self.edges],
                "mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Preparation:
        if values.get("format") != FORMAT:
            raise ValidationError(f"not a preparation of format {FORMAT}: {values.get('format')!r}")

        def bounds(name: str, missing: float) -> np.ndarray:
            return np.array([missing if v is None else v for v in values[name]], dtype=np.float64)
        preparation = cls(int(values["inputs"]), np.asarray(values["sources"], dtype=np.int64),
                          np.asarray(values["indicator"], dtype=bool), np.asarray(values["median"], dtype=np.float64),
                          np.asarray(values["log"], dtype=bool), bounds("low", -np.inf), bounds("high", np.inf),
                          tuple(tuple(float(e) for e in edges) for edges in values["edges"]),
                          np.asarray(values["mean"], dtype=np.float64), np.asarray(values["scale"], dtype=np.float64))
        widths = {array.size for array in (preparation.indicator, preparation.median, preparation.log, preparation.low,
                                           preparation.high, preparation.mean, preparation.scale)}
        if widths != {preparation.outputs} or len(preparation.edges) != preparation.outputs or (
                preparation.outputs and not 0 <= preparation.sources.min() <= preparation.sources.max() < preparation.inputs):
            raise ValidationError("a preparation whose columns do not line up")
        return preparation


def _raw_matrix(features: np.ndarray, inputs: int | None) -> np.ndarray:
    matrix = np.asarray(features, dtype=np.float64)
    if matrix.ndim != 2 or (inputs is not None and matrix.shape[1] != inputs):
        want = "" if inputs is None else f" with {inputs} columns"
        raise ValidationError(f"features must be a (rows, columns) matrix{want}, got shape {matrix.shape}")
    if np.isinf(matrix).any():
        raise ValidationError("features must be finite or NaN (missing), not infinite")
    return matrix
