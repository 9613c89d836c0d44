"""Quantile binning of one party's features; the bin edges never leave their owner.

Each party bins its own columns: at most `bins` bins of about equal counts over the non-missing
values (fewer where a column has fewer distinct values, as a 0/1 flag or a heavily tied one),
plus one bin for missing values (NaN). Bin v holds edges[v-1] < x <= edges[v], so "bin <= t" is
"x <= edges[t]": a split on bin t is the threshold edges[t], kept by the party that owns the column.

For the histogram sums each column's bins are renumbered as `digits`: its most populated bin
becomes digit 0, whose sums a party gets by subtraction from the node total, so rows in it cost
nothing (on skewed bank data, where 70% of a column may be one value, that is most rows).

>>> binned = QuantileBins.fit(np.array([[1.0, 0.0], [2.0, np.nan], [3.0, 0.0], [4.0, 5.0]]), bins=2)
>>> binned.edges[0].tolist(), binned.bin_of(np.array([[2.5, np.nan]])).tolist()
([2.0], [[1, 2]])
>>> binned.threshold(0, 0), binned.missing_bin(1)
(2.0, 2)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.core.errors import ConfigError, ValidationError

MAX_BINS = 254  # with the missing bin, digits fit in a uint8


def check_features(features: np.ndarray, rows: int, who: str) -> np.ndarray:
    """A (rows, features) float matrix; NaN is a missing value, an infinity is an error."""
    matrix = np.asarray(features, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != rows:
        raise ValidationError(f"the {who}'s features must be a (rows, features) matrix with {rows} rows, "
                              f"not shape {matrix.shape}")
    infinite = np.isinf(matrix)
    if infinite.any():
        row, column = (int(i) for i in np.argwhere(infinite)[0])
        raise ValidationError(f"the {who}'s feature {column} is infinite in row {row} (missing values are NaN)")
    return matrix


def _edges(column: np.ndarray, bins: int) -> np.ndarray:
    values = column[~np.isnan(column)]
    if values.size == 0:
        return np.empty(0)
    distinct = np.unique(values)
    if distinct.size <= bins:
        return np.asarray(distinct[:-1], dtype=np.float64)  # one bin per value: x <= value
    quantiles = np.quantile(values, np.arange(1, bins) / bins, method="inverted_cdf")
    edges = np.unique(quantiles)
    return np.asarray(edges[edges < distinct[-1]], dtype=np.float64)  # an edge at the maximum would leave an empty last bin


@dataclass(frozen=True)
class QuantileBins:
    """Per column: the bin edges, and the digit of each bin (its most populated bin is digit 0)."""

    edges: tuple[np.ndarray, ...]
    digit_of_bin: tuple[np.ndarray, ...]

    @classmethod
    def fit(cls, features: np.ndarray, bins: int) -> QuantileBins:
        if not 2 <= bins <= MAX_BINS:
            raise ConfigError(f"bins must be 2 to {MAX_BINS}, not {bins}")
        matrix = np.asarray(features, dtype=np.float64)
        edges = tuple(_edges(matrix[:, column], bins) for column in range(matrix.shape[1]))
        digit_of_bin = []
        for column, column_edges in enumerate(edges):
            counts = np.bincount(_bin_column(matrix[:, column], column_edges), minlength=column_edges.size + 2)
            order = np.argsort(-counts, kind="stable")  # most populated first
            digits = np.empty(order.size, dtype=np.uint8)
            digits[order] = np.arange(order.size, dtype=np.uint8)
            digit_of_bin.append(digits)
        return cls(edges, tuple(digit_of_bin))

    @property
    def columns(self) -> int:
        return len(self.edges)

    def missing_bin(self, column: int) -> int:
        return int(self.edges[column].size + 1)

    def bin_of(self, features: np.ndarray) -> np.ndarray:
        """Bin index per value (missing: the column's missing bin), shape of `features`."""
        matrix = np.asarray(features, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.columns:
            raise ValidationError(f"features must have {self.columns} columns, not shape {matrix.shape}")
        out = np.empty(matrix.shape, dtype=np.uint8)
        for column, column_edges in enumerate(self.edges):
            out[:, column] = _bin_column(matrix[:, column], column_edges)
        return out

    def digits(self, binned: np.ndarray) -> np.ndarray:
        """Bins renumbered per column so that digit 0 is the most populated bin."""
        out = np.empty(binned.shape, dtype=np.uint8)
        for column, digits in enumerate(self.digit_of_bin):
            out[:, column] = digits[binned[:, column]]
        return out

    def bin_counts(self) -> tuple[int, ...]:
        """Bins per column, the missing bin included."""
        return tuple(int(column_edges.size + 2) for column_edges in self.edges)

    def threshold(self, column: int, bin_index: int) -> float:
        """The value a split after bin `bin_index` compares with: x <= threshold goes left."""
        return float(self.edges[column][bin_index])


def _bin_column(column: np.ndarray, edges: np.ndarray) -> np.ndarray:
    binned = np.searchsorted(edges, column, side="left").astype(np.uint8)
    binned[np.isnan(column)] = edges.size + 1
    return binned
