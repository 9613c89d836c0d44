"""Scoring a batch of events, as a pure function of the events, the profiles, the partner's
partial scores and the live models: no I/O, so it is tested and benchmarked on its own.

An aligned customer whose partner partial score has arrived, of the partner half's lineage the
deployed federated half was trained with (services/protocol/partner_versions.py: a window of
online learning behind is expected until the partner's new scores arrive), is scored by the
product's federated model (services/models/federated.py); everyone else by the bank-only
model, or by the product's fallback while that model may not serve yet (live_models.py).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from services.models.bank_features import feature_matrix
from services.models.federated import REASON_NAMES, LiveFederated
from services.protocol.bank_keys import parse_partial_score
from services.protocol.partner_versions import same_lineage
from services.protocol.stream_messages import CustomerEvent, CustomerProfile, CustomerScores, ProductScore, ReasonCode
from services.scoring.live_models import FALLBACK_REASONS, LiveModel
from services.scoring.model import top_reasons_batch
from services.scoring.state import PartialScoresOf


def score_batch(events: Sequence[CustomerEvent], profiles: Sequence[CustomerProfile], partials: Sequence[PartialScoresOf],
                live: Mapping[str, LiveModel], federated: Mapping[str, LiveFederated],
                scored_at_ms: int) -> tuple[list[CustomerScores], np.ndarray]:
    """One CustomerScores per event (a propensity and reason codes for every product), and the
    feature matrix they were scored on (row i: event i)."""
    features = feature_matrix(list(events), list(profiles))
    per_product = []
    for product, model in live.items():
        fallback = model.serving_fallback()
        if fallback is None:
            propensities, contributions = model.model.predict_batch(features)
            version = model.version
            labels = [version.label] * len(events)
            numbers = [version.service_number] * len(events)
            reasons = top_reasons_batch(contributions)
        else:
            propensities = np.full(len(events), fallback.propensity)
            labels, numbers = [fallback.label] * len(events), [fallback.version.service_number] * len(events)
            reasons = [FALLBACK_REASONS] * len(events)
        partner = [False] * len(events)
        federated_model = federated.get(product)
        if federated_model is not None:
            _score_federated(federated_model, features, partials, propensities, labels, numbers, reasons, partner)
        per_product.append((product, labels, numbers, propensities.tolist(), reasons, partner))
    scores = []
    for row, (event, profile) in enumerate(zip(events, profiles)):
        product_scores = tuple([
            ProductScore(product, propensities[row], labels[row], numbers[row], partner[row], reasons[row])
            for product, labels, numbers, propensities, reasons, partner in per_product
        ])
        scores.append(CustomerScores(
            event_id=event.event_id, customer_id=event.customer_id, event_type=event.event_type,
            received_at_ms=event.received_at_ms, scored_at_ms=scored_at_ms, segment=profile.segment,
            preferred_channel=profile.preferred_channel, timezone=profile.timezone, age=profile.age,
            products_held=profile.products_held, consent_marketing=profile.consent_marketing, scores=product_scores,
        ))
    return scores, features


def _score_federated(live: LiveFederated, features: np.ndarray, partials: Sequence[PartialScoresOf],
                     propensities: np.ndarray, labels: list[str], numbers: list[str],
                     reasons: list[tuple[ReasonCode, ...]], partner: list[bool]) -> None:
    """Rescore, in place, the rows whose partner partial score matches the deployed federated half."""
    rows, scores = [], []
    for row, per_model in enumerate(partials):
        stored = per_model.get(live.version.model_name)
        if stored:
            version, score = parse_partial_score(stored)
            if same_lineage(version, live.half.partner_version):
                rows.append(row)
                scores.append(score)
    if not rows:
        return
    contributions = live.half.contributions(features[rows], np.asarray(scores))
    propensities[rows] = live.half.propensities(contributions)
    for row, row_reasons in zip(rows, top_reasons_batch(contributions, names=REASON_NAMES)):
        labels[row], numbers[row], reasons[row], partner[row] = live.label, live.version.service_number, row_reasons, True
