"""A party's local preparation: fitted on its own raw training rows, applied the same way at scoring time."""
from __future__ import annotations

import json

import numpy as np
import pytest

from services.core.errors import ValidationError
from services.models.preparation import Preparation, signed_log1p, skewness
from services.models.raw_shaped import BANK_COLUMNS, PARTNER_COLUMNS, raw_shaped


def column(name: str) -> int:
    return (BANK_COLUMNS if name in BANK_COLUMNS else PARTNER_COLUMNS).index(name)


def outputs_of(preparation: Preparation, name: str) -> list[int]:
    return [j for j, source in enumerate(preparation.sources.tolist()) if source == column(name)]


@pytest.fixture(scope="module")
def bureau() -> np.ndarray:
    return raw_shaped(bank_rows=4_000, seed=2)[1].features


def test_raw_bureau_columns_come_out_imputed_logged_clipped_and_standardised(bureau: np.ndarray) -> None:
    preparation = Preparation.fit(bureau)
    prepared = preparation.transform(bureau)
    assert np.isfinite(prepared).all()
    assert np.allclose(prepared.mean(axis=0), 0, atol=1e-9) and np.allclose(prepared.std(axis=0), 1)
    assert outputs_of(preparation, "file_version") == []  # constant: dropped
    debt = outputs_of(preparation, "largest_loan")
    assert len(debt) == 1 and preparation.log[debt[0]]  # Pareto-tailed amounts: logged
    assert abs(skewness(prepared[:, debt[0]])) < abs(skewness(bureau[:, column("largest_loan")])) / 5
    score = outputs_of(preparation, "bureau_score")  # normal-ish with 12 % missing: value + indicator
    assert preparation.indicator[score].tolist() == [False, True] and not preparation.log[score[0]]
    missing = np.isnan(bureau[:, column("bureau_score")])
    assert np.allclose(prepared[missing, score[0]], prepared[missing, score[0]][0])  # every gap gets the median
    median = np.nanmedian(bureau[:, column("bureau_score")])
    assert preparation.median[score[0]] == median
    assert np.unique(prepared[:, score[1]]).size == 2


def test_scoring_time_outliers_and_gaps_stay_within_what_the_training_rows_did(bureau: np.ndarray) -> None:
    preparation = Preparation.fit(bureau)
    training = preparation.transform(bureau)
    extreme = np.nanmax(bureau, axis=0) * 1_000 + 1
    gaps = np.full(bureau.shape[1], np.nan)
    scored = preparation.transform(np.vstack([extreme, gaps]))
    assert np.isfinite(scored).all()
    assert (scored[0] <= training.max(axis=0) + 1e-12).all()
    value_columns = ~preparation.indicator
    imputed = preparation.transform(np.nanmedian(bureau, axis=0)[None, :])
    assert np.allclose(scored[1, value_columns], imputed[0, value_columns])


def test_a_rare_flag_is_kept_whole_where_quantile_clipping_would_erase_it() -> None:
    rng = np.random.default_rng(0)
    flag = (rng.random(20_000) < 0.0005).astype(float)
    assert 0 < flag.sum() < 0.001 * flag.size
    amounts = rng.lognormal(8, 1.5, 20_000)
    preparation = Preparation.fit(np.column_stack([flag, amounts]))
    prepared = preparation.transform(np.column_stack([flag, amounts]))
    assert np.unique(prepared[:, 0]).size == 2 and preparation.log.tolist() == [False, True]
    assert preparation.high[1] < signed_log1p(amounts).max()  # the amounts' top 0.1 % is clipped


def test_a_prescaled_column_is_only_standardised() -> None:
    values = np.random.default_rng(1).normal(size=(5_000, 3))
    preparation = Preparation.fit(values)
    assert not preparation.log.any() and not preparation.indicator.any()
    core = np.abs(values).max(axis=1) < 2.5  # away from the clipped 0.1 % tails
    assert np.allclose(preparation.transform(values)[core], ((values - values.mean(0)) / values.std(0))[core], atol=0.01)


def test_it_round_trips_through_json_and_applies_identically(bureau: np.ndarray) -> None:
    preparation = Preparation.fit(bureau, bins=8)
    assert preparation.describe()["binned"] > 0
    restored = Preparation.from_dict(json.loads(json.dumps(preparation.to_dict())))
    assert np.array_equal(restored.transform(bureau), preparation.transform(bureau))
    identity = Preparation.identity(3)
    assert np.array_equal(Preparation.from_dict(json.loads(json.dumps(identity.to_dict()))).transform(np.eye(3)), np.eye(3))


def test_bins_give_monotone_steps(bureau: np.ndarray) -> None:
    preparation = Preparation.fit(bureau, bins=5)
    debt = outputs_of(preparation, "total_debt")[0]
    raw = bureau[:, column("total_debt")]
    prepared = preparation.transform(bureau)[:, debt]
    assert np.unique(prepared).size <= 5
    order = np.argsort(raw)
    assert (np.diff(prepared[order]) >= 0).all()


def test_per_input_sums_output_columns_back_onto_their_sources(bureau: np.ndarray) -> None:
    preparation = Preparation.fit(bureau)
    shares = np.arange(preparation.outputs, dtype=np.float64)[None, :]
    per_input = preparation.per_input(shares)[0]
    score = outputs_of(preparation, "bureau_score")
    assert per_input[column("bureau_score")] == sum(score)
    assert per_input[column("file_version")] == 0
    assert per_input.sum() == shares.sum()


def test_bad_input_is_a_clear_error(bureau: np.ndarray) -> None:
    preparation = Preparation.fit(bureau)
    with pytest.raises(ValidationError, match="with 10 columns, got shape"):
        preparation.transform(bureau[:, :4])
    with pytest.raises(ValidationError, match="not infinite"):
        preparation.transform(np.full((1, 10), np.inf))
    with pytest.raises(ValidationError, match="at least 2 training rows"):
        Preparation.fit(bureau[:1])
    with pytest.raises(ValidationError, match="not a preparation"):
        Preparation.from_dict({"format": "something else"})
    broken = {**preparation.to_dict(), "mean": [0.0]}
    with pytest.raises(ValidationError, match="do not line up"):
        Preparation.from_dict(broken)
