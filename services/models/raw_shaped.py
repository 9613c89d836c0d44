"""A vertically split data set shaped like what a bank and a credit bureau really hold.

FATE's example sets come standardised; real exports do not. Here the bank's half has ages,
tenures, incomes and balances in currency units (lognormal, thousands), zero-inflated counts,
binary flags, a card-spend column missing for people without a card and a constant column; the
bureau's half has a score missing for thin files, inquiry counts, debts and limits in the
thousands with heavy (Pareto) tails, a utilisation ratio, delinquencies with a "months since"
column that is missing when there were none, and a constant column. Neither side is scaled.

Ids overlap in part: the bank holds `bank_rows` people, the bureau `overlap` of them plus
`partner_extra` (a share of `bank_rows`) it alone holds, each side in its own order. Every bank
row has a label, drawn from a logistic model over both sides' latent traits (on log scales, as
the business reads them), so the bureau's features carry signal the bank's lack. Seeded: the
same arguments give the same tables.

>>> bank, partner = raw_shaped(bank_rows=2_000, seed=1)
>>> bank.features.shape == (2000, len(BANK_COLUMNS)), partner.features.shape[1] == len(PARTNER_COLUMNS)
(True, True)
>>> shared = set(bank.join_ids) & set(partner.join_ids)
>>> len(shared), len(partner.join_ids), bool(np.isnan(partner.features).any()), bool(np.nanmax(bank.features) > 1e4)
(1500, 1800, True, True)
"""
from __future__ import annotations

import numpy as np

from services.models.datasets import GuestTable, HostTable

BANK_COLUMNS: tuple[str, ...] = (
    "age", "tenure_months", "monthly_income", "balance", "card_spend_3m", "products_held", "overdraft_days_12m",
    "has_mortgage", "salary_domiciled", "app_active", "branch_country",
)
PARTNER_COLUMNS: tuple[str, ...] = (
    "bureau_score", "inquiries_6m", "total_debt", "credit_limit", "utilisation", "delinquencies_24m",
    "months_since_delinquency", "thin_file", "largest_loan", "file_version",
)


def _lognormal(rng: np.random.Generator, median: float, sigma: float, size: int) -> np.ndarray:
    return median * np.exp(sigma * rng.standard_normal(size))


def _standard(values: np.ndarray) -> np.ndarray:
    standard: np.ndarray = (values - values.mean()) / values.std()
    return standard


def raw_shaped(bank_rows: int = 8_000, overlap: float = 0.75, partner_extra: float = 0.15,
               seed: int = 0) -> tuple[GuestTable, HostTable]:
    """The bank's table (ids, 0/1 labels, raw features in BANK_COLUMNS order, NaN where missing)
    and the bureau's (ids, raw features in PARTNER_COLUMNS order)."""
    if not 0 < overlap <= 1 or partner_extra < 0 or bank_rows < 10:
        raise ValueError("need 0 < overlap <= 1, partner_extra >= 0 and at least 10 bank rows")
    rng = np.random.default_rng(seed)
    shared = round(bank_rows * overlap)
    people = bank_rows + round(bank_rows * partner_extra)
    # Latent traits, one row per person of either party.
    wealth = rng.standard_normal(people)
    engagement = rng.standard_normal(people)
    credit = 0.5 * wealth + np.sqrt(0.75) * rng.standard_normal(people)  # bureau-side, partly seen through wealth
    stress = -0.3 * wealth + np.sqrt(0.91) * rng.standard_normal(people)

    age = np.clip(42 + 13 * rng.standard_normal(people) + 4 * wealth, 18, 90).round()
    tenure_months = np.minimum(rng.exponential(60, people) * np.exp(0.2 * engagement), (age - 17) * 12).round()
    monthly_income = np.exp(np.log(4_500) + 0.55 * wealth + 0.2 * rng.standard_normal(people)).round(2)
    balance = np.where(rng.random(people) < 0.1, 0.0, _lognormal(rng, 8_000, 1.0, people) * np.exp(0.8 * wealth)).round(2)
    has_card = rng.random(people) < 0.85
    card_spend = np.where(has_card, _lognormal(rng, 2_000, 0.9, people) * np.exp(0.4 * engagement), np.nan).round(2)
    products_held = 1 + rng.poisson(np.exp(0.3 + 0.25 * engagement + 0.15 * wealth))
    overdraft_days = np.where(rng.random(people) < 1 / (1 + np.exp(1.2 - 1.1 * stress)),
                              rng.poisson(np.exp(1.5 + 0.6 * stress)), 0)
    has_mortgage = (rng.random(people) < 1 / (1 + np.exp(1.3 - 0.6 * wealth))).astype(float)
    salary_domiciled = (rng.random(people) < 1 / (1 + np.exp(-0.4 - 0.8 * engagement))).astype(float)
    app_active = (rng.random(people) < 1 / (1 + np.exp(-0.8 - 1.0 * engagement))).astype(float)
    bank_features = np.column_stack([age, tenure_months, monthly_income, balance, card_spend, products_held,
                                     overdraft_days, has_mortgage, salary_domiciled, app_active, np.ones(people)])

    thin_file = rng.random(people) < 0.08 + 0.1 * (age < 25)
    bureau_score = np.where(thin_file | (rng.random(people) < 0.04), np.nan,
                            np.clip(650 + 70 * credit - 25 * stress + 15 * rng.standard_normal(people), 300, 850)).round()
    inquiries = rng.poisson(np.exp(0.1 + 0.6 * stress - 0.2 * credit))
    credit_limit = np.where(thin_file, 0.0, _lognormal(rng, 12_000, 0.7, people) * np.exp(0.6 * credit)).round(-2)
    utilisation_share = 1 / (1 + np.exp(-(-0.8 + 0.9 * stress - 0.5 * credit + 0.4 * rng.standard_normal(people))))
    total_debt = np.where(rng.random(people) < 0.2, 0.0, credit_limit * utilisation_share * 1.3).round(2)
    utilisation = np.where(credit_limit > 0, total_debt / np.maximum(credit_limit, 1.0), 0.0).round(4)
    delinquencies = np.where(rng.random(people) < 1 / (1 + np.exp(2.0 - 1.2 * stress + 0.6 * credit)),
                             1 + rng.poisson(np.exp(0.2 + 0.4 * stress)), 0)
    months_since = np.where(delinquencies > 0, rng.integers(1, 25, people), np.nan).astype(float)
    largest_loan = np.where(thin_file, 0.0, 5_000 * (1 + rng.pareto(1.6, people)) * np.exp(0.3 * credit)).round(2)
    partner_features = np.column_stack([bureau_score, inquiries, total_debt, credit_limit, utilisation, delinquencies,
                                        months_since, thin_file.astype(float), largest_loan, np.full(people, 3.0)])

    # The label: a response or repayment outcome on business scales; the bureau's half carries
    # about as much of it as the bank's.
    bank_share = (0.55 * _standard(np.log(monthly_income)) + 0.35 * _standard(np.log1p(balance))
                  + 0.35 * salary_domiciled + 0.4 * app_active - 0.45 * _standard(np.log1p(overdraft_days))
                  + 0.2 * _standard(np.log1p(np.nan_to_num(card_spend))) - 0.3 * has_card)
    partner_share = (0.9 * _standard(np.nan_to_num(bureau_score, nan=600.0)) - 0.6 * thin_file
                     - 0.5 * _standard(np.log1p(inquiries)) - 0.75 * _standard(utilisation)
                     - 0.8 * (delinquencies > 0) + 0.3 * _standard(np.log1p(credit_limit)))
    logits = -1.6 + 0.65 * bank_share + 0.85 * partner_share
    labels = (rng.random(people) < 1 / (1 + np.exp(-logits))).astype(np.int64)

    # Who holds whom: persons [0, bank_rows) at the bank, [bank_rows - shared, people) at the bureau.
    ids = np.array([f"ID{seed:03d}{person:08d}" for person in range(people)])
    bank_people = rng.permutation(bank_rows)
    partner_people = rng.permutation(np.arange(bank_rows - shared, people))
    bank = GuestTable(tuple(ids[bank_people].tolist()), labels[bank_people], bank_features[bank_people])
    partner = HostTable(tuple(ids[partner_people].tolist()), partner_features[partner_people])
    return bank, partner
