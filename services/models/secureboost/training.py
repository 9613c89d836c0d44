"""Both parties of SecureBoost in one process, every message through the codec (tests, benchmarks)."""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from services.core.avro import AvroCodec
from services.models.secureboost.guest import BankParty
from services.models.secureboost.host import PartnerParty
from services.models.wire import Transcript, Wire


@dataclass
class BoostingReport:
    """Seconds per tree and per step, the training loss after each tree, bytes each way."""

    tree_seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    step_seconds: dict[str, float] = field(default_factory=dict)
    bytes_to_partner: int = 0
    bytes_to_bank: int = 0

    def timed(self, step: str, started: float) -> None:
        self.step_seconds[step] = self.step_seconds.get(step, 0.0) + time.perf_counter() - started


def train_secureboost(bank: BankParty, partner: PartnerParty, *, codec: AvroCodec, model_name: str = "sbt",
                      version: str = "v1", join_ids: Sequence[str] | None = None,
                      transcript: Transcript | None = None) -> BoostingReport:
    """Grow `bank.parameters.trees` trees level by level; `transcript` receives every message's bytes."""
    wire = Wire(codec, transcript)
    report = BoostingReport()
    partner.on_start(wire.to_partner(bank.start(model_name, version, join_ids)))
    for tree in range(bank.parameters.trees):
        started = at = time.perf_counter()
        partner.on_gradients(wire.to_partner(bank.gradients(tree)))
        report.timed("1_bank_gradients", at)
        while (request := bank.node_request()) is not None:
            at = time.perf_counter()
            histograms = wire.to_bank(partner.histograms(wire.to_partner(request)))
            report.timed("2_partner_histograms", at)
            at = time.perf_counter()
            splits = wire.to_partner(bank.choose_splits(histograms))
            report.timed("3_bank_splits", at)
            at = time.perf_counter()
            split_rows = wire.to_bank(partner.split_rows(splits))
            report.timed("4_partner_split_rows", at)
            at = time.perf_counter()
            bank.apply_splits(split_rows)
            report.timed("5_bank_route", at)
        report.losses.append(bank.end_tree())
        report.tree_seconds.append(time.perf_counter() - started)
    partner.on_finish(wire.to_partner(bank.finish(model_name, version)))
    report.bytes_to_partner, report.bytes_to_bank = wire.bytes_to_partner, wire.bytes_to_bank
    return report


def predict(bank: BankParty, partner: PartnerParty, join_ids: Sequence[str], model_name: str = "sbt") -> np.ndarray:
    """P(y = 1) per join id: the partner answers its splits for them, the bank walks its trees."""
    return bank.predict_proba(join_ids, partner.decisions(join_ids, [model_name]), model_name)
