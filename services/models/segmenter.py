"""Customer style types: an online clustering of customers by how they bank and what they are
likely to buy, with cluster ids that keep their meaning while the clustering learns.

Each customer is one style vector (`STYLE_FEATURES`), kept per customer by scoring and updated
with each of their events (`blend`):

- who they are, from the profile (the latest values): age, tenure, income, balance, products held;
- how they bank, from their events (smoothed over roughly their last ten): the share of each
  event type, the typical amount;
- what they are likely to buy: the log-odds of each product's propensity, smoothed likewise.

Why river's `KMeans` with a fixed k, for stable ids: an update moves only the centre nearest to
the row, by a small step, so a centre stays with its customers and keeps its index for as long
as it lives; nothing renumbers. River's density-based clusterers (DBSTREAM, DenStream, CluStream)
rebuild their clusters from micro-clusters whenever asked, so their cluster numbers carry no
identity from one call to the next, which is what dispatch's rules need most.

What is added around river's `KMeans`:

- Preparation. Each feature is standardised by the running mean and standard deviation of
  every row learned (frozen between two `refresh`es, so a batch is assigned under one metric),
  clipped to +-5 standard deviations (heavy tails), and each of the three groups is weighted by
  1/sqrt(its size), so the profile's ten columns do not outvote the affinity's five.
- Seeding. River places centres at random normal positions, which leaves some that never win a
  row; we seed by k-means++ and a few Lloyd iterations on the first `warmup_rows` rows. Until
  then every customer is `UNASSIGNED`.
- A step per centre of max(1/n, min_rate), n the rows it has won: a young centre converges like a
  running mean, an old one keeps following its customers slowly. River's `halflife` is that step
  (river lists it as a mutable attribute).
- The many verbs in numpy. River's `learn_one` plus `predict_one` cost ~73 us a row here (23
  features, 6 centres: more than scoring's whole budget per event), so `learn_many` applies the
  same per-centre update with the batch's assignments taken at its start (mini-batch k-means,
  Sculley 2010, which river's docstring cites) and `predict_many` is one matrix product.
- Ids. River's centre i carries the public id `ids[i]`. A centre that wins less than `min_share`
  of the rows between two refreshes is dead: `refresh` re-places it by k-means++ on a recent
  sample and gives it a new id (nobody was assigned the old one, so no id changes meaning).
  `reseed` refits every centre and gives each the id of the old centre nearest to it (within
  `same_type_distance`), new ids to the others: the id a customer had keeps its meaning.
- Names. At each refresh each type is named from its centroid against the whole population
  (the features furthest from the mean, in standard deviations), e.g. "young, digital,
  low-balance", with a description in business units; the name is a description, the id is
  the contract (dispatch's campaigns name ids).

Two kinds of customer, young and on the app, older and in the branch with a mortgage:

>>> rng = np.random.default_rng(1)
>>> def customers(age, app_share, mortgage):
...     rows = rng.normal(0, 0.05, (300, len(STYLE_FEATURES)))
...     rows[:, STYLE_FEATURES.index("age")] += age
...     rows[:, STYLE_FEATURES.index("share_app_login")] += app_share
...     rows[:, STYLE_FEATURES.index("holds_mortgage")] += mortgage
...     return rows
>>> young, older = customers(25, 0.8, 0), customers(70, 0.1, 1)
>>> segmenter = Segmenter(n_types=2, warmup_rows=100)
>>> segmenter.learn_many(np.vstack([young, older])[rng.permutation(600)])
>>> [segmenter.types[style_id].name for style_id in segmenter.predict_many(np.vstack([young[:1], older[:1]]))]
['young, digital', 'older, homeowner, offline']
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
from river import cluster

from services.models.bank_features import FEATURE_NAMES, PRODUCTS
from services.models.contract import Row, check_matrix, check_row, checkpoint_bytes, restore_checkpoint
from services.protocol.stream_messages import TRIGGER_EVENT_TYPES, UNASSIGNED_STYLE_NAME, UNASSIGNED_STYLE_TYPE

STYLE_MODEL_NAME = "style_types"
UNASSIGNED = UNASSIGNED_STYLE_TYPE

PROFILE_FEATURES: tuple[str, ...] = (
    "age", "tenure_years", "log_monthly_income", "log_balance", "products_held_count",
    *(f"holds_{product}" for product in PRODUCTS),
)
BEHAVIOUR_FEATURES: tuple[str, ...] = (*(f"share_{kind}" for kind in TRIGGER_EVENT_TYPES), "log_event_amount")
AFFINITY_FEATURES: tuple[str, ...] = tuple(f"affinity_{product}" for product in PRODUCTS)
STYLE_FEATURES: tuple[str, ...] = (*PROFILE_FEATURES, *BEHAVIOUR_FEATURES, *AFFINITY_FEATURES)

# Behaviour and affinity are smoothed per customer; the profile is taken as it is now.
SMOOTHED = np.array([name not in PROFILE_FEATURES for name in STYLE_FEATURES])
# Each event moves a customer's smoothed columns this far: about their last ten events count.
CUSTOMER_STEP = 0.1
STATE_WIDTH = 1 + len(STYLE_FEATURES)  # a customer's stored state: [events seen, *style vector]
CLIP_SD = 5.0
# A type's name takes the features at least this many standard deviations from the population.
NAME_MIN_SD = 0.5
NAME_WORDS = 3
LLOYD_ITERATIONS = 10
SEED_ATTEMPTS = 5

_PROFILE_COLUMNS = [FEATURE_NAMES.index(name) for name in PROFILE_FEATURES]
_AMOUNT_COLUMN = FEATURE_NAMES.index("log_event_amount")
_EVENT_COLUMN = {kind: len(PROFILE_FEATURES) + index for index, kind in enumerate(TRIGGER_EVENT_TYPES)}
_AFFINITY_START = len(PROFILE_FEATURES) + len(BEHAVIOUR_FEATURES)


def _group_weights() -> np.ndarray:
    sizes = {group: len(group) for group in (PROFILE_FEATURES, BEHAVIOUR_FEATURES, AFFINITY_FEATURES)}
    return np.array([1 / math.sqrt(size) for group, size in sizes.items() for _ in group])


def observations(features: np.ndarray, event_types: Sequence[str], propensities: np.ndarray) -> np.ndarray:
    """One style observation per event (rows x STYLE_FEATURES), from the features it was scored on
    (rows x FEATURE_NAMES), its event type and each product's propensity (rows x PRODUCTS).

    >>> row = np.zeros((1, len(FEATURE_NAMES))); row[0, 0] = 30
    >>> seen = dict(zip(STYLE_FEATURES, observations(row, ["app_login"], np.full((1, len(PRODUCTS)), 0.5))[0].tolist()))
    >>> seen["age"], seen["share_app_login"], seen["share_deposit"], seen["affinity_mortgage"]
    (30.0, 1.0, 0.0, 0.0)
    """
    rows = len(event_types)
    found = np.zeros((rows, len(STYLE_FEATURES)))
    found[:, :len(PROFILE_FEATURES)] = features[:, _PROFILE_COLUMNS]
    found[np.arange(rows), [_EVENT_COLUMN[kind] for kind in event_types]] = 1.0
    found[:, len(PROFILE_FEATURES) + len(TRIGGER_EVENT_TYPES)] = features[:, _AMOUNT_COLUMN]
    clipped = np.clip(propensities, 1e-4, 1 - 1e-4)
    found[:, _AFFINITY_START:] = np.log(clipped / (1 - clipped))
    return found


def blend(previous: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Customers' stored states after one more event each, row by row: [events seen, *style vector].
    The first events average, later ones move the smoothed columns by CUSTOMER_STEP; the profile
    columns are the latest. A row of zeros is a customer without a state yet.

    >>> login, deposit = np.zeros((1, len(STYLE_FEATURES))), np.zeros((1, len(STYLE_FEATURES)))
    >>> login[0, STYLE_FEATURES.index("share_app_login")] = 1.0
    >>> deposit[0, STYLE_FEATURES.index("age")] = 31
    >>> state = blend(blend(np.zeros((1, STATE_WIDTH)), login), deposit)
    >>> vector = dict(zip(("events", *STYLE_FEATURES), state[0].tolist()))
    >>> vector["events"], vector["age"], vector["share_app_login"]
    (2.0, 31.0, 0.5)
    """
    events = previous[:, 0] + 1
    step = np.maximum(1 / events, CUSTOMER_STEP)[:, None]
    vectors = np.where(SMOOTHED, previous[:, 1:] + step * (seen - previous[:, 1:]), seen)
    blended: np.ndarray = np.column_stack((events, vectors))
    return blended


@dataclass(frozen=True)
class StyleType:
    """One style type as dispatch and people see it: the id is the contract, the rest describes it."""

    style_id: int
    name: str
    description: str
    share: float  # of a recent sample of customer updates


UNASSIGNED_TYPE = StyleType(UNASSIGNED, UNASSIGNED_STYLE_NAME, "not enough customers seen yet to form style types", 0.0)


def _sigmoid(log_odds: float) -> float:
    return 1 / (1 + math.exp(-log_odds))


def _words(name: str) -> tuple[str, str | None]:
    """(word when high, word when low) for a feature, as a type's name uses it."""
    words: dict[str, tuple[str, str | None]] = {
        "age": ("older", "young"), "tenure_years": ("long-standing", "new to the bank"),
        "log_monthly_income": ("high-income", "low-income"), "log_balance": ("high-balance", "low-balance"),
        "products_held_count": ("multi-product", "single-product"),
        "holds_credit_card": ("card holder", None), "holds_wealth_fund": ("invested", None),
        "holds_personal_loan": ("borrower", None), "holds_travel_insurance": ("insured traveller", None),
        "holds_mortgage": ("homeowner", None),
        "share_salary_credit": ("salaried", None), "share_large_deposit": ("big depositor", None),
        "share_deposit": ("saver", None), "share_card_spend_abroad": ("spends abroad", None),
        "share_card_spend": ("card-active", None), "share_transfer_out": ("transfers out", None),
        "share_app_login": ("digital", "offline"), "log_event_amount": ("big-ticket", "small-ticket"),
    }
    if name.startswith("affinity_"):  # a low propensity mostly says the customer holds the product: no word
        return f"{name.removeprefix('affinity_').replace('_', '-')} prospect", None
    return words[name]


def _in_units(name: str, value: float) -> tuple[str, str]:
    """(what, how much) for a style feature's value, in business units.

    >>> _in_units("log_monthly_income", math.log1p(12_000)), _in_units("share_app_login", 0.62)
    (('monthly income', '12,000'), ('app login share', '62%'))
    """
    if name == "age":
        return "age", f"{value:.0f}"
    if name == "tenure_years":
        return "years a customer", f"{value:.1f}"
    if name in ("log_monthly_income", "log_balance", "log_event_amount"):
        label = {"log_monthly_income": "monthly income", "log_balance": "balance", "log_event_amount": "typical amount"}
        return label[name], f"{math.expm1(max(value, 0.0)):,.0f}"
    if name == "products_held_count":
        return "products held", f"{value:.1f}"
    if name.startswith("holds_"):
        return f"holding {name.removeprefix('holds_').replace('_', ' ')}", f"{min(max(value, 0.0), 1.0):.0%}"
    if name.startswith("share_"):
        return f"{name.removeprefix('share_').replace('_', ' ')} share", f"{min(max(value, 0.0), 1.0):.0%}"
    return f"{name.removeprefix('affinity_').replace('_', ' ')} propensity", f"{_sigmoid(value):.1%}"


def describe(centroid: np.ndarray, population: np.ndarray, columns: Sequence[int]) -> str:
    """The telling features of a centroid against the population's means, in business units.

    >>> centroid, population = np.zeros(len(STYLE_FEATURES)), np.zeros(len(STYLE_FEATURES))
    >>> centroid[0], population[0] = 27, 41
    >>> describe(centroid, population, [0])
    'age 27 (all 41)'
    """
    parts = []
    for column in columns:
        what, value = _in_units(STYLE_FEATURES[column], float(centroid[column]))
        parts.append(f"{what} {value} (all {_in_units(STYLE_FEATURES[column], float(population[column]))[1]})")
    return "; ".join(parts)


@dataclass
class Segmenter:
    """Online k-means over customers' style vectors with stable, named ids (river's verbs)."""

    n_types: int = 6
    seed: int = 0
    warmup_rows: int = 256
    min_rate: float = 0.002
    min_share: float = 0.01
    same_type_distance: float = 1.0
    sample_size: int = 512
    first_id: int = 0  # a segmenter that replaces another (a new feature set) continues its ids
    kmeans: Any = field(init=False, repr=False)
    ids: list[int] = field(default_factory=list, init=False)
    next_id: int = field(default=0, init=False)  # every id ever given is below it
    rows_learned: int = field(default=0, init=False)
    types: dict[int, StyleType] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.n_types < 2 or self.warmup_rows < self.n_types or self.sample_size < self.warmup_rows:
            raise ValueError("need n_types >= 2 and n_types <= warmup_rows <= sample_size")
        dimension = len(STYLE_FEATURES)
        self.trained_on = STYLE_FEATURES  # a checkpoint over other features cannot be restored
        self.kmeans = cluster.KMeans(n_clusters=self.n_types, halflife=1.0, seed=self.seed)
        self._rng = np.random.default_rng(self.seed)
        self._weights: np.ndarray = _group_weights()
        self._centres: np.ndarray = np.zeros((self.n_types, dimension))  # the river centres as a matrix, scaled
        self._wins: np.ndarray = np.zeros(self.n_types)
        self._recent_wins: np.ndarray = np.zeros(self.n_types)
        self._count = 0
        self._mean: np.ndarray = np.zeros(dimension)
        self._m2: np.ndarray = np.zeros(dimension)
        # The metric, frozen between refreshes.
        self._means: np.ndarray = np.zeros(dimension)
        self._scales: np.ndarray = np.ones(dimension)
        self._sample: np.ndarray = np.zeros((self.sample_size, dimension))  # the last rows, a ring
        # The centres and ids of the last refresh, in raw units: what a refit maps its ids from.
        self._anchors: np.ndarray = np.zeros((self.n_types, dimension))
        self._anchor_ids: list[int] = []
        self._river_behind = False  # the matrix moved since river's centres were last written

    # --- the contract ------------------------------------------------------------------------------------
    @property
    def feature_names(self) -> tuple[str, ...]:
        return STYLE_FEATURES

    @property
    def seeded(self) -> bool:
        return bool(self.ids)

    def learn_one(self, x: Row) -> None:
        """One customer's style vector, through river's KMeans."""
        row = check_row(x, STYLE_FEATURES)[None, :]
        if self._observe(row):
            return
        scaled = dict(zip(STYLE_FEATURES, self._scale(row)[0].tolist()))
        kmeans = self._river()
        closest = kmeans.predict_one(scaled)
        kmeans.halflife = self._steps(closest, 1)[0]
        kmeans.learn_one(scaled)
        self._centres[closest] = [kmeans.centers[closest][name] for name in STYLE_FEATURES]
        self._wins[closest] += 1
        self._recent_wins[closest] += 1

    def learn_many(self, X: np.ndarray) -> None:
        """Many customers' style vectors at once: each centre steps towards the rows nearest to it,
        row by row as `learn_one` would, with the nearest centres found at the batch's start.

        In closed form, for a centre c winning rows x_1..x_m with steps s_t and k_t = 1 - s_t:
        c' = c prod_t k_t + sum_t s_t x_t prod_{u > t} k_u, for all centres in a few array operations
        (a loop per centre cost 10 us a row in batches of 50)."""
        rows = check_matrix(X, STYLE_FEATURES)
        if self._observe(rows):
            return
        scaled = self._scale(rows)
        nearest = self._nearest(scaled)
        order = np.argsort(nearest, kind="stable")  # rows grouped by centre, in arrival order within each
        grouped = nearest[order]
        won = np.bincount(grouped, minlength=self.n_types)
        group_start = np.cumsum(won) - won
        rank = np.arange(len(order)) - group_start[grouped] + 1  # t: the row is the t-th its centre wins here
        # A step of 1 (a centre's very first row) would make log(keep) infinite: 1 - 1e-12 is the same centre.
        steps = np.minimum(np.maximum(1 / (self._wins[grouped] + rank), self.min_rate), 1 - 1e-12)
        log_keep = np.log1p(-steps)
        total_log_keep = np.bincount(grouped, weights=log_keep, minlength=self.n_types)
        through = np.cumsum(log_keep) - np.concatenate(([0.0], np.cumsum(log_keep)))[group_start[grouped]]
        weights = steps * np.exp(total_log_keep[grouped] - through)  # s_t prod_{u > t} k_u
        pulled = np.zeros((self.n_types, len(order)))
        pulled[grouped, np.arange(len(order))] = weights
        self._centres = self._centres * np.exp(total_log_keep)[:, None] + pulled @ scaled[order]
        self._wins += won
        self._recent_wins += won
        self._river_behind = True

    def predict_one(self, x: Row) -> int:
        """The customer's style type id (UNASSIGNED before the warm-up), by river's KMeans."""
        row = check_row(x, STYLE_FEATURES)[None, :]
        if not self.seeded:
            return UNASSIGNED
        closest: int = self._river().predict_one(dict(zip(STYLE_FEATURES, self._scale(row)[0].tolist())))
        return self.ids[closest]

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """Each row's style type id."""
        rows = check_matrix(X, STYLE_FEATURES)
        if not self.seeded:
            return np.full(len(rows), UNASSIGNED, dtype=np.int64)
        found: np.ndarray = np.asarray(self.ids, dtype=np.int64)[self._nearest(self._scale(rows))]
        return found

    def to_bytes(self) -> bytes:
        return checkpoint_bytes(self)

    @classmethod
    def from_bytes(cls, checkpoint: bytes) -> Self:
        return restore_checkpoint(checkpoint, cls)

    # --- names -------------------------------------------------------------------------------------------
    def type_of(self, style_id: int) -> StyleType:
        return self.types.get(style_id, UNASSIGNED_TYPE)

    def names_of(self, style_ids: np.ndarray) -> list[str]:
        return [self.type_of(style_id).name for style_id in style_ids.tolist()]

    # --- refreshing --------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Between batches, at each checkpoint: the metric from every row so far (the centres
        re-expressed in it, unmoved) and names from the centroids. Centres that won less than
        `min_share` of the rows since the last refresh are dead: each is re-placed by k-means++ on
        the recent rows, Lloyd's iterations settle every centre among them, and each centre takes
        the id of the last refresh's centre nearest to it (so a type whose centre was pulled
        towards newcomers keeps its id where its customers are), a new id if none is near."""
        if not self.seeded:
            return
        centres_raw = self._unscale(self._centres)
        self._update_metric()
        self._centres = self._scaled_exactly(centres_raw)
        total = self._recent_wins.sum()
        dead = np.flatnonzero(self._recent_wins < self.min_share * total).tolist() if total >= 20 * self.n_types else []
        if dead:
            recent = self._scaled_sample()
            alive = [centre for centre in range(self.n_types) if centre not in dead]
            for centre in dead:
                self._centres[centre] = self._plus_plus_pick(recent, self._centres[alive])
                self._wins[centre] = 0
                alive.append(centre)
            self._lloyd(recent)
            self._take_ids_of(self._scaled_exactly(self._anchors), self._anchor_ids)
        self._river_behind = True
        self._recent_wins[:] = 0
        self._publish()

    def reseed(self) -> None:
        """Refit every centre from the recent rows (k-means++, Lloyd); a new centre takes the id of
        the old one nearest to it, within `same_type_distance`, else a new id."""
        if not self.seeded:
            return
        old_raw, old_ids = self._unscale(self._centres), list(self.ids)
        self._update_metric()
        self._seed()
        self._take_ids_of(self._scaled_exactly(old_raw), old_ids)
        self._publish()

    # --- internals ---------------------------------------------------------------------------------------
    def _observe(self, rows: np.ndarray) -> bool:
        """Count the rows into the running statistics and the recent rows; seed once the warm-up is
        done. True when the rows were only observed (the warm-up is not over)."""
        count = len(rows)
        batch_mean = rows.mean(axis=0)
        delta = batch_mean - self._mean
        total = self._count + count
        self._m2 = self._m2 + ((rows - batch_mean) ** 2).sum(axis=0) + delta ** 2 * self._count * count / total
        self._mean = self._mean + delta * count / total
        self._count = total
        kept = rows[-self.sample_size:]
        self._sample[(self.rows_learned + count - len(kept) + np.arange(len(kept))) % self.sample_size] = kept
        self.rows_learned += count
        if self.seeded:
            return False
        if self.rows_learned >= self.warmup_rows:
            self._update_metric()
            self._seed()
            self.ids = list(range(self.first_id, self.first_id + self.n_types))
            self.next_id = self.first_id + self.n_types
            self._publish()
        return True

    def _take_ids_of(self, previous: np.ndarray, previous_ids: list[int]) -> None:
        """Each centre takes the id of the nearest previous centre (closest pairs first, each
        previous id once, within `same_type_distance`); a centre left over gets a new id."""
        distances = np.sqrt(((self._centres[:, None, :] - previous[None, :, :]) ** 2).sum(axis=2))
        matched: dict[int, int] = {}
        for centre, old in sorted(np.ndindex(distances.shape), key=lambda pair: float(distances[pair])):
            if centre not in matched and previous_ids[old] not in matched.values() \
                    and distances[centre, old] <= self.same_type_distance:
                matched[centre] = previous_ids[old]
        self.ids = [matched[centre] if centre in matched else self._new_id() for centre in range(self.n_types)]

    def _update_metric(self) -> None:
        variance = self._m2 / max(self._count, 1)
        self._means = self._mean.copy()
        self._scales = np.where(variance > 1e-12, np.sqrt(np.maximum(variance, 1e-12)), 1.0)

    def _scale(self, rows: np.ndarray) -> np.ndarray:
        scaled: np.ndarray = np.clip((rows - self._means) / self._scales, -CLIP_SD, CLIP_SD) * self._weights
        return scaled

    def _scaled_exactly(self, rows: np.ndarray) -> np.ndarray:
        """Like `_scale` without the clip: centres keep their position when the metric changes."""
        scaled: np.ndarray = (rows - self._means) / self._scales * self._weights
        return scaled

    def _unscale(self, scaled: np.ndarray) -> np.ndarray:
        rows: np.ndarray = scaled / self._weights * self._scales + self._means
        return rows

    def _scaled_sample(self) -> np.ndarray:
        """The last `sample_size` rows (fewer before there are that many), in the current metric."""
        return self._scale(self._sample[:min(self.rows_learned, self.sample_size)])

    def _nearest(self, scaled: np.ndarray) -> np.ndarray:
        distances = (scaled ** 2).sum(axis=1)[:, None] - 2 * scaled @ self._centres.T + (self._centres ** 2).sum(axis=1)
        nearest: np.ndarray = np.argmin(distances, axis=1)
        return nearest

    def _steps(self, centre: int, rows: int) -> np.ndarray:
        """The step towards each of the next `rows` rows a centre wins: max(1/n, min_rate)."""
        steps: np.ndarray = np.maximum(1 / (self._wins[centre] + np.arange(1, rows + 1)), self.min_rate)
        return steps

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def _plus_plus_pick(self, rows: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """A row drawn with probability proportional to its squared distance to the nearest centre."""
        nearest = ((rows[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2).min(axis=1) if len(centres) else None
        if nearest is None or nearest.sum() <= 0:
            picked: np.ndarray = rows[self._rng.integers(len(rows))].copy()
        else:
            picked = rows[self._rng.choice(len(rows), p=nearest / nearest.sum())].copy()
        return picked

    def _seed(self) -> None:
        """k-means++ on the recent rows, then Lloyd, SEED_ATTEMPTS times; the tightest fit wins (one
        k-means++ draw can leave two centres in one group and one across two)."""
        rows = self._scaled_sample()
        best: tuple[float, np.ndarray] | None = None
        for _ in range(SEED_ATTEMPTS):
            centres = np.empty((0, rows.shape[1]))
            for _ in range(self.n_types):
                centres = np.vstack([centres, self._plus_plus_pick(rows, centres)])
            self._centres = centres
            self._lloyd(rows)
            inertia = float(((rows - self._centres[self._nearest(rows)]) ** 2).sum())
            if best is None or inertia < best[0]:
                best = (inertia, self._centres.copy())
        assert best is not None
        self._centres = best[1]
        self._wins = np.bincount(self._nearest(rows), minlength=self.n_types).astype(np.float64)
        self._river_behind = True
        self._recent_wins = np.zeros(self.n_types)
        self.ids = [UNASSIGNED] * self.n_types

    def _lloyd(self, rows: np.ndarray) -> None:
        """Lloyd's iterations from the current centres; each centre then stands for at least the rows it holds."""
        for _ in range(LLOYD_ITERATIONS):
            nearest = self._nearest(rows)
            for centre in range(self.n_types):
                if (nearest == centre).any():
                    self._centres[centre] = rows[nearest == centre].mean(axis=0)
        held = np.bincount(self._nearest(rows), minlength=self.n_types).astype(np.float64)
        self._wins = np.maximum(self._wins, held)
        self._river_behind = True

    def _river(self) -> Any:
        """River's KMeans holding the matrix's centres: the many verbs move the matrix, and river's
        copy is brought up to date when a one verb needs it (a dict per centre per batch cost 1 us a row)."""
        if self._river_behind:
            for centre in range(self.n_types):
                self.kmeans.centers[centre].update(zip(STYLE_FEATURES, self._centres[centre].tolist()))
            self._river_behind = False
        return self.kmeans

    def _publish(self) -> None:
        """Name each type from its centroid against the population, its share from the recent rows;
        the centres become the anchors the next refit maps ids from."""
        self._anchors, self._anchor_ids = self._unscale(self._centres), list(self.ids)
        variance = self._m2 / max(self._count, 1)
        spread = np.sqrt(np.maximum(variance, 0.0))
        centroids = self._unscale(self._centres)
        deviations = np.divide(centroids - self._mean, spread, out=np.zeros_like(centroids), where=spread > 1e-12)
        shares = np.bincount(self._nearest(self._scaled_sample()), minlength=self.n_types) / max(min(self.rows_learned, self.sample_size), 1)
        candidates = []
        for centre in range(self.n_types):
            words: list[str] = []
            for column in np.argsort(-np.abs(deviations[centre]), kind="stable").tolist():
                deviation = deviations[centre, column]
                if abs(deviation) < NAME_MIN_SD:
                    break
                high, low = _words(STYLE_FEATURES[column])
                word = high if deviation > 0 else low
                if word and word not in words:
                    words.append(word)
            candidates.append(words or ["typical"])
        lengths = [min(NAME_WORDS, len(words)) for words in candidates]
        names = [", ".join(words[:length]) for words, length in zip(candidates, lengths)]
        for _ in range(len(STYLE_FEATURES)):  # lengthen names that two types share, while words remain
            clashing = [centre for centre, name in enumerate(names) if names.count(name) > 1
                        and lengths[centre] < len(candidates[centre])]
            if not clashing:
                break
            for centre in clashing:
                lengths[centre] += 1
                names[centre] = ", ".join(candidates[centre][:lengths[centre]])
        self.types = {}
        for centre, style_id in enumerate(self.ids):
            name = names[centre] if names.count(names[centre]) == 1 else f"{names[centre]} #{style_id}"
            telling = np.argsort(-np.abs(deviations[centre]), kind="stable")[:4].tolist()
            description = describe(centroids[centre], self._mean, telling)
            self.types[style_id] = StyleType(style_id, name, description, float(shares[centre]))
