"""SecureBoost served beside LR: for the products configured to use it (`secureboost_products`),
an aligned customer whose partner split decisions have arrived, for the partner version the
deployed bank half was trained with, is scored by the product's SecureBoost trees
(services/models/secureboost/serving.py); everyone else keeps the score `batch_scoring` gave.

A pure function of the scores, the feature matrix they were scored on, the stored decisions and
the live models, like `batch_scoring.score_batch`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from services.models.federated import REASON_NAMES
from services.models.secureboost.serving import LiveSecureBoost
from services.protocol.bank_keys import parse_split_decisions
from services.protocol.stream_messages import CustomerScores, ProductScore
from services.scoring.model import top_reasons_batch

SplitDecisionsOf = dict[str, str]
"""One customer's stored decisions: SecureBoost model name -> "<partner version>|<bitmap hex>"."""


def apply_secureboost(scores: list[CustomerScores], features: np.ndarray, decisions: Sequence[SplitDecisionsOf],
                      live: Mapping[str, LiveSecureBoost]) -> list[CustomerScores]:
    """`scores` with the product score of every row that SecureBoost can serve replaced by its score."""
    replaced: dict[int, dict[str, ProductScore]] = {}
    for product, model in live.items():
        rows, bitmaps = [], []
        for row, per_model in enumerate(decisions):
            stored = per_model.get(model.version.model_name)
            if stored:
                version, bitmap = parse_split_decisions(stored)
                if version == model.half.partner_version:
                    rows.append(row)
                    bitmaps.append(bitmap)
        if not rows:
            continue
        propensities, contributions = model.half.score(features[rows], bitmaps)
        for row, propensity, reasons in zip(rows, propensities.tolist(),
                                            top_reasons_batch(contributions, names=REASON_NAMES)):
            replaced.setdefault(row, {})[product] = ProductScore(product, propensity, model.label,
                                                                  model.version.service_number, True, reasons)
    if not replaced:
        return scores
    return [dataclasses.replace(score, scores=tuple(replaced.get(row, {}).get(s.product, s) for s in score.scores))
            if row in replaced else score for row, score in enumerate(scores)]
