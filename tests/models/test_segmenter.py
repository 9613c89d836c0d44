"""Customer style types: ids that keep their meaning while the clustering learns, re-seeds and
refits; names read off the centroids; the numpy verbs do what river's do."""
from __future__ import annotations

import numpy as np

from services.models.segmenter import STATE_WIDTH, STYLE_FEATURES, UNASSIGNED, Segmenter, blend
from tests.models.style_data import KINDS, customers_of, mixed_stream

FOUR = ["young_digital", "affluent_saver", "traveller", "family_borrower"]


def _trained(kinds: list[str] = FOUR, rows: int = 3000, seed: int = 3, **options: float) -> Segmenter:
    segmenter = Segmenter(n_types=len(kinds), seed=seed, **options)  # type: ignore[arg-type]
    stream, _ = mixed_stream(kinds, rows, seed)
    for batch in np.array_split(stream, 60):
        segmenter.learn_many(batch)
    segmenter.refresh()
    return segmenter


def _id_of(segmenter: Segmenter, kind: str, seed: int = 99) -> int:
    found = segmenter.predict_many(customers_of(kind, 200, np.random.default_rng(seed)))
    values, counts = np.unique(found, return_counts=True)
    assert counts.max() >= 190, f"{kind} customers are split over {dict(zip(values.tolist(), counts.tolist()))}"
    return int(values[np.argmax(counts)])


def test_every_customer_is_unassigned_until_the_warm_up_is_over() -> None:
    segmenter = Segmenter(n_types=4, warmup_rows=100)
    stream, _ = mixed_stream(FOUR, 99, seed=1)
    segmenter.learn_many(stream)
    assert (segmenter.predict_many(stream) == UNASSIGNED).all() and segmenter.type_of(UNASSIGNED).name == "unassigned"
    segmenter.learn_many(stream[:1])
    assert set(segmenter.predict_many(stream).tolist()) == {0, 1, 2, 3}


def test_each_kind_of_customer_gets_its_own_type_named_from_its_centroid() -> None:
    segmenter = _trained()
    ids = {kind: _id_of(segmenter, kind) for kind in FOUR}
    assert len(set(ids.values())) == 4
    names = {kind: segmenter.type_of(style_id).name for kind, style_id in ids.items()}
    assert "digital" in names["young_digital"]
    assert "spends abroad" in names["traveller"]
    assert "homeowner" in names["family_borrower"] or "borrower" in names["family_borrower"]
    assert "high-balance" in names["affluent_saver"] or "high-income" in names["affluent_saver"]
    assert len(set(names.values())) == 4
    description = segmenter.type_of(ids["young_digital"]).description
    assert "age 24 (all " in description or "app login share" in description
    assert abs(sum(t.share for t in segmenter.types.values()) - 1) < 1e-9


def test_ids_keep_their_meaning_across_refreshes_while_the_centres_learn() -> None:
    segmenter = _trained()
    before = {kind: _id_of(segmenter, kind) for kind in FOUR}
    for round_ in range(5):
        stream, _ = mixed_stream(FOUR, 1000, seed=10 + round_)
        for batch in np.array_split(stream, 20):
            segmenter.learn_many(batch)
        segmenter.refresh()
        assert {kind: _id_of(segmenter, kind) for kind in FOUR} == before


def test_a_dead_type_is_replaced_by_a_new_id_and_the_others_keep_theirs() -> None:
    segmenter = _trained()
    before = {kind: _id_of(segmenter, kind) for kind in FOUR}
    survivors = ["young_digital", "affluent_saver", "traveller"]
    # The family borrowers leave, retirees arrive (not seen before).
    KINDS["retiree"] = {"age": 75, "tenure_years": 30, "share_deposit": 0.6, "log_event_amount": 4.0}
    try:
        stream = np.vstack([mixed_stream(survivors, 1500, seed=21)[0],
                            customers_of("retiree", 500, np.random.default_rng(22))])
        stream = stream[np.random.default_rng(23).permutation(len(stream))]
        for batch in np.array_split(stream, 40):
            segmenter.learn_many(batch)
        segmenter.refresh()  # the borrowers' centre won nothing since the last refresh: re-placed
        for batch in np.array_split(stream, 40):
            segmenter.learn_many(batch)
        segmenter.refresh()
        after = {kind: _id_of(segmenter, kind) for kind in survivors}
        assert after == {kind: before[kind] for kind in survivors}
        retiree = _id_of(segmenter, "retiree")
        assert retiree not in before.values() and retiree == segmenter.next_id - 1
        assert "older" in segmenter.type_of(retiree).name or "long-standing" in segmenter.type_of(retiree).name
        assert before["family_borrower"] not in segmenter.types
    finally:
        del KINDS["retiree"]


def test_a_reseed_maps_ids_by_the_nearest_old_centroid() -> None:
    segmenter = _trained()
    held_out, _ = mixed_stream(FOUR, 800, seed=31)
    before = segmenter.predict_many(held_out)
    segmenter.reseed()
    after = segmenter.predict_many(held_out)
    assert (before == after).mean() > 0.98 and sorted(segmenter.types) == sorted(set(before.tolist()))


def test_a_reseed_on_changed_customers_keeps_the_ids_of_the_types_that_stayed() -> None:
    segmenter = _trained()
    before = {kind: _id_of(segmenter, kind) for kind in FOUR}
    KINDS["retiree"] = {"age": 75, "tenure_years": 30, "share_deposit": 0.6, "log_event_amount": 4.0}
    try:
        stream = np.vstack([mixed_stream(FOUR[:3], 1500, seed=41)[0], customers_of("retiree", 500, np.random.default_rng(42))])
        for batch in np.array_split(stream[np.random.default_rng(43).permutation(len(stream))], 40):
            segmenter.learn_many(batch)
        segmenter.reseed()
        assert {kind: _id_of(segmenter, kind) for kind in FOUR[:3]} == {kind: before[kind] for kind in FOUR[:3]}
        assert _id_of(segmenter, "retiree") >= 4
    finally:
        del KINDS["retiree"]


def test_learn_many_moves_a_centre_as_river_s_learn_one_does() -> None:
    one, many = _trained(), _trained()
    rows = customers_of("traveller", 30, np.random.default_rng(5))
    for row in rows:
        one.learn_one(dict(zip(STYLE_FEATURES, row.tolist())))
    many.learn_many(rows)  # same centre for every row, so the same sequence of steps
    centre = one.ids.index(_id_of(one, "traveller"))
    river_centre = np.array([one.kmeans.centers[centre][name] for name in STYLE_FEATURES])
    assert np.allclose(many._centres, one._centres, atol=1e-12) and np.allclose(one._centres[centre], river_centre)
    held_out, _ = mixed_stream(FOUR, 200, seed=6)
    assert [one.predict_one(dict(zip(STYLE_FEATURES, row.tolist()))) for row in held_out] \
        == many.predict_many(held_out).tolist()


def test_a_customer_s_behaviour_is_smoothed_over_their_events_and_the_profile_is_the_latest() -> None:
    login, deposit = np.zeros((1, len(STYLE_FEATURES))), np.zeros((1, len(STYLE_FEATURES)))
    login[0, STYLE_FEATURES.index("share_app_login")] = 1.0
    deposit[0, STYLE_FEATURES.index("share_deposit")] = 1.0
    deposit[0, STYLE_FEATURES.index("age")] = 31
    state = np.zeros((1, STATE_WIDTH))
    for _ in range(30):
        state = blend(state, login)
    state = blend(state, deposit)
    vector = dict(zip(STYLE_FEATURES, state[0, 1:].tolist()))
    assert state[0, 0] == 31 and vector["age"] == 31
    assert abs(vector["share_app_login"] - 0.9) < 1e-9 and abs(vector["share_deposit"] - 0.1) < 1e-9
    two = blend(np.vstack([np.zeros(STATE_WIDTH), state[0]]), np.vstack([login, login]))  # row by row
    assert two[0, 0] == 1 and two[1, 0] == 32 and two[0, 1 + STYLE_FEATURES.index("share_app_login")] == 1.0
