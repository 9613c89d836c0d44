"""On FATE's real data, the federated model at its defaults is within 0.005 test AUC of scikit-learn on the
same joined rows, each party's half prepared by its own preparation, and no worse than scikit-learn on
the rows as FATE ships them.

breast runs with real encryption end to end. default_credit (22,500 training rows) runs the same
code path with the plaintext protocol math (same quantisation, fixed point, masks and bytes; no
Paillier), and its first batches also run encrypted and must give bit-identical weights: the
full encrypted run is `bench/fedlr.py` (about 13 s per epoch here).
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from services.core.avro import AvroCodec
from services.crypto.paillier import PaillierPrivateKey
from services.models.datasets import GuestTable, HostTable, load_vertical, stratified_split
from services.models.fedlr import BankParty, PartnerParty, predict, train_federated
from services.models.preparation import Preparation

AUC_TOLERANCE = 0.005


def split(name: str) -> tuple[GuestTable, HostTable, list[str], list[str]]:
    bank_table, partner_table = load_vertical(name)
    assert bank_table.join_ids == partner_table.join_ids
    train, test = stratified_split(bank_table.join_ids, bank_table.labels, test_fraction=0.25, seed=0)
    return bank_table, partner_table, train, test


def preparations(bank_table: GuestTable, partner_table: HostTable, train: list[str]) -> tuple[Preparation, Preparation]:
    """Each party's own, fitted on its training rows alone."""
    rows = rows_of(bank_table, train)
    return Preparation.fit(bank_table.features[rows]), Preparation.fit(partner_table.features[rows])


def rows_of(bank_table: GuestTable, join_ids: list[str]) -> list[int]:
    row_of = {join_id: row for row, join_id in enumerate(bank_table.join_ids)}
    return [row_of[j] for j in join_ids]


def central_auc(bank_features: np.ndarray, partner_features: np.ndarray, labels: np.ndarray, train_rows: list[int],
                test_rows: list[int]) -> float:
    """scikit-learn's LogisticRegression (defaults) on the joined columns: the baseline nobody could run."""
    joined = np.hstack([bank_features, partner_features])
    model = LogisticRegression(max_iter=5000).fit(joined[train_rows], labels[train_rows])
    return float(roc_auc_score(labels[test_rows], model.predict_proba(joined[test_rows])[:, 1]))


def baselines(bank_table: GuestTable, partner_table: HostTable, train: list[str], test: list[str],
              bank_preparation: Preparation, partner_preparation: Preparation) -> tuple[float, float]:
    """Central AUC on the same prepared rows, and on the rows as they came."""
    train_rows, test_rows = rows_of(bank_table, train), rows_of(bank_table, test)
    prepared = central_auc(bank_preparation.transform(bank_table.features), partner_preparation.transform(partner_table.features),
                           bank_table.labels, train_rows, test_rows)
    as_shipped = central_auc(bank_table.features, partner_table.features, bank_table.labels, train_rows, test_rows)
    return prepared, as_shipped


def federated_auc(bank: BankParty, partner: PartnerParty, bank_table: GuestTable, test: list[str]) -> float:
    labels = bank_table.labels[rows_of(bank_table, test)]
    return float(roc_auc_score(labels, predict(bank, partner, test)))


@pytest.mark.slow  # every epoch under real 2048-bit Paillier
def test_breast_federated_auc_with_encryption_matches_central(bank_private_key: PaillierPrivateKey,
                                                               codec: AvroCodec) -> None:
    bank_table, partner_table, train, test = split("breast")
    bank_preparation, partner_preparation = preparations(bank_table, partner_table, train)
    bank = BankParty(bank_table.join_ids, bank_table.labels, bank_table.features, preparation=bank_preparation,
                     private_key=bank_private_key, workers=2)
    partner = PartnerParty(partner_table.join_ids, partner_table.features, preparation=partner_preparation, workers=2)
    try:
        report = train_federated(bank, partner, codec=codec, join_ids=train)
    finally:
        bank.close()
        partner.close()
    assert report.converged and report.losses[-1] < report.losses[0] / 3
    central, as_shipped = baselines(bank_table, partner_table, train, test, bank_preparation, partner_preparation)
    federated = federated_auc(bank, partner, bank_table, test)
    assert central > 0.98
    assert abs(federated - central) <= AUC_TOLERANCE, (federated, central)
    assert federated >= as_shipped - AUC_TOLERANCE, (federated, as_shipped)


def test_default_credit_federated_auc_matches_central(codec: AvroCodec) -> None:
    bank_table, partner_table, train, test = split("default_credit")
    bank_preparation, partner_preparation = preparations(bank_table, partner_table, train)
    bank = BankParty(bank_table.join_ids, bank_table.labels, bank_table.features, preparation=bank_preparation,
                     encrypted=False, shuffle_seed=1)
    partner = PartnerParty(partner_table.join_ids, partner_table.features, preparation=partner_preparation)
    report = train_federated(bank, partner, codec=codec, join_ids=train)
    assert report.converged
    central, as_shipped = baselines(bank_table, partner_table, train, test, bank_preparation, partner_preparation)
    federated = federated_auc(bank, partner, bank_table, test)
    assert central > 0.7
    assert abs(federated - central) <= AUC_TOLERANCE, (federated, central)
    assert federated >= as_shipped - AUC_TOLERANCE, (federated, as_shipped)


@pytest.mark.parametrize("mode", ["minibatch", "online"])
def test_default_credit_encrypted_batches_equal_the_plaintext_protocol(bank_private_key: PaillierPrivateKey,
                                                                       mode: str, codec: AvroCodec) -> None:
    bank_table, partner_table, train, _ = split("default_credit")
    rows = train[:768]  # three batches of 256
    weights = []
    for private_key in (bank_private_key, None):
        bank = BankParty(bank_table.join_ids, bank_table.labels, bank_table.features, private_key=private_key,
                         encrypted=private_key is not None, shuffle_seed=1, workers=2)
        partner = PartnerParty(partner_table.join_ids, partner_table.features, workers=2)
        try:
            report = train_federated(bank, partner, mode, epochs=1, batch_size=256, codec=codec, join_ids=rows)  # type: ignore[arg-type]
        finally:
            bank.close()
            partner.close()
        assert report.batches == 3
        weights.append((bank.weights.copy(), bank.bias, partner.weights.copy()))
    (bank_encrypted, bias_encrypted, partner_encrypted), (bank_plain, bias_plain, partner_plain) = weights
    assert np.array_equal(partner_encrypted, partner_plain) and np.abs(partner_plain).min() > 0
    assert np.array_equal(bank_encrypted, bank_plain) and bias_encrypted == bias_plain
