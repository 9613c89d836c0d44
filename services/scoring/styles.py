"""Customer style types as scoring serves them: each scored event moves its customer's style
vector (kept in Redis), the segmenter (services/models/segmenter.py) learns from the batch and
places each customer, and the type goes out with the scores (`style_type_id`, `style_type_name`).

The segmenter is checkpointed to the registry as model `style_types`, a version with lineage
like the product models, every `checkpoint_every_s` while it learns, and restored at start; its
parameters record the types (id, name, description, share), which `cipherstream styles` lists.

Replicas: each learns from the customers of its own partitions. At a checkpoint, a replica whose
version is no longer the latest (another replica checkpointed since) adopts the latest instead of
registering, dropping what it learned since: one lineage, and one meaning per id, for all of
them. Between two checkpoints replicas differ only by what each learned since the last.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.core.logs import facts
from services.models.bank_features import PRODUCTS
from services.models.registry import DataFingerprint, ModelRegistry, ModelVersion, StaleVersionError
from services.models.segmenter import STATE_WIDTH, STYLE_FEATURES, STYLE_MODEL_NAME, Segmenter, blend, observations
from services.protocol.stream_messages import CustomerScores
from services.scoring.model import PRIOR_CONVERSION_RATE
from services.scoring.state import ScoringState

log = logging.getLogger(__name__)
STYLE_KEY = "style"
STYLE_TTL_S = 90 * 24 * 3600
# One version every five minutes while the segmenter learns (~110 kB each): a day is ~30 MB.
CHECKPOINT_EVERY_S = 300.0
_STATE_BYTES = 8 * STATE_WIDTH
_NO_STATE = bytes(_STATE_BYTES)
STORE_STATES_LUA = """
local ttl = ARGV[1]
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ttl)
end
return #KEYS
"""


@dataclass
class LiveStyles:
    registry: ModelRegistry
    state: ScoringState
    segmenter: Segmenter
    version: ModelVersion
    fingerprint: DataFingerprint
    checkpoint_every_s: float = CHECKPOINT_EVERY_S
    operator: str = "scoring-service"
    learned_since_checkpoint: int = 0
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    checkpointed_at: float = field(default_factory=time.monotonic)
    _store_script: Any = None

    @classmethod
    def start(cls, registry: ModelRegistry, state: ScoringState, checkpoint_every_s: float = CHECKPOINT_EVERY_S,
              operator: str = "scoring-service") -> LiveStyles:
        """Serve the latest version (restored from its checkpoint), or register a new segmenter.

        A restart does not register a version of its own: it would fork the lineage, and every
        other replica would adopt it, and so lose what it learned since, at its next checkpoint."""
        latest = registry.latest(STYLE_MODEL_NAME)
        segmenter = _restore(latest)
        previous = latest[0] if latest else None
        styles = cls(registry, state, segmenter, previous,  # type: ignore[arg-type]  # registered just below if None
                     DataFingerprint(previous.data_fingerprint if previous else ""), checkpoint_every_s, operator)
        if previous is None or segmenter.rows_learned != previous.rows_learned:
            try:
                styles.version = styles._register()
            except StaleVersionError:  # another replica registered first: serve its version
                styles._adopt_latest()
        registry.record_deployment(styles.version.service_number, operator=operator, target=socket.gethostname())
        return styles

    async def assign(self, scores: list[CustomerScores], features: np.ndarray, known: list[bool]) -> None:
        """Each known customer's style type on their scores (the others stay unassigned): their style
        vector moves with this event, the segmenter learns from the batch, then places each."""
        rows = [row for row, is_known in enumerate(known) if is_known]
        if not rows:
            return
        placed = [scores[row] for row in rows]
        propensities = _propensities(placed)
        seen = observations(features[rows], [one.event_type for one in placed], propensities)
        customers = [one.customer_id for one in placed]
        distinct = list(dict.fromkeys(customers))
        stored = await self.state.redis.mget([self._key(customer) for customer in distinct])
        # A missing state, or one of another length (an older feature set), starts from zeros.
        states = np.frombuffer(b"".join(raw if raw is not None and len(raw) == _STATE_BYTES else _NO_STATE
                                        for raw in stored), dtype=np.float64).reshape(len(distinct), STATE_WIDTH).copy()
        if len(distinct) == len(customers):  # the usual batch: each customer once
            states = blend(states, seen)
            vectors = states[:, 1:]
        else:
            vectors = self._blend_in_order(states, seen, customers, distinct)
        self.segmenter.learn_many(vectors)
        style_ids = self.segmenter.predict_many(vectors)
        if self._store_script is None:
            self._store_script = self.state.redis.register_script(STORE_STATES_LUA)
        # One command for the batch: a pipelined SET per customer cost more than the clustering.
        await self._store_script(keys=[self._key(customer) for customer in distinct],
                                 args=[STYLE_TTL_S, *(state.tobytes() for state in states)])
        self.fingerprint.update_bytes(vectors.tobytes(), max(one.received_at_ms for one in placed))
        self.learned_since_checkpoint += len(rows)
        for one, style_id in zip(placed, style_ids.tolist()):
            # The scores were made for this batch a moment ago and nothing else holds them yet: set the
            # two fields in place (a new CustomerScores per event cost 5 us, a tenth of scoring a batch).
            object.__setattr__(one, "style_type_id", style_id)
            object.__setattr__(one, "style_type_name", self.segmenter.type_of(style_id).name)

    @staticmethod
    def _blend_in_order(states: np.ndarray, seen: np.ndarray, customers: list[str], distinct: list[str]) -> np.ndarray:
        """`blend` for a batch where a customer comes more than once: their events move them in order.
        `states` (one row per distinct customer) is updated in place; returns each event's vector."""
        position = {customer: index for index, customer in enumerate(distinct)}
        state_of = np.array([position[customer] for customer in customers])
        times_before: dict[str, int] = {}
        occurrences = []  # how many of the customer's events came earlier in this batch
        for customer in customers:
            occurrences.append(times_before.get(customer, 0))
            times_before[customer] = occurrences[-1] + 1
        occurrence = np.array(occurrences)
        vectors = np.empty((len(customers), len(STYLE_FEATURES)))
        for round_ in range(int(occurrence.max()) + 1):
            now = np.flatnonzero(occurrence == round_)
            states[state_of[now]] = blend(states[state_of[now]], seen[now])
            vectors[now] = states[state_of[now], 1:]
        return vectors

    async def checkpoint_due(self) -> None:
        if self.learned_since_checkpoint and time.monotonic() - self.checkpointed_at >= self.checkpoint_every_s:
            await asyncio.to_thread(self.checkpoint)

    def checkpoint(self) -> None:
        """Register the refreshed segmenter, or adopt the latest version if another replica's is newer."""
        started = time.perf_counter()
        latest = self.registry.latest(STYLE_MODEL_NAME)
        if latest and latest[1] and latest[0].service_number != self.version.service_number:
            self._adopt_latest()
        else:
            self.segmenter.refresh()
            try:
                self.version = self._register()
            except StaleVersionError:  # another replica checkpointed between our look and our write
                self._adopt_latest()
            else:
                log.info("style types checkpoint", extra=facts(service_number=self.version.service_number,
                                                               rows=self.segmenter.rows_learned,
                                                               seconds=round(time.perf_counter() - started, 3)))
        self.learned_since_checkpoint = 0
        self.checkpointed_at = time.monotonic()
        self.started_at = dt.datetime.now(dt.UTC)

    def _adopt_latest(self) -> None:
        """Serve the newest registered version instead of ours: one history, never a fork."""
        latest = self.registry.latest(STYLE_MODEL_NAME)
        assert latest is not None and latest[1] is not None  # a version another replica registered
        self.segmenter, self.version = Segmenter.from_bytes(latest[1]), latest[0]
        self.fingerprint = DataFingerprint(latest[0].data_fingerprint)
        log.info("style types adopted", extra=facts(service_number=self.version.service_number))

    def _register(self) -> ModelVersion:
        segmenter = self.segmenter
        return self.registry.register(
            model_name=STYLE_MODEL_NAME, algorithm="river.cluster.KMeans(online, fixed k, stable ids)",
            parameters={"n_types": segmenter.n_types, "min_rate": segmenter.min_rate, "min_share": segmenter.min_share,
                        "same_type_distance": segmenter.same_type_distance, "warmup_rows": segmenter.warmup_rows,
                        "next_id": segmenter.next_id,
                        "style_types": [dataclasses.asdict(style) for style in segmenter.types.values()]},
            feature_names=list(STYLE_FEATURES), rows_learned=segmenter.rows_learned, iterations=segmenter.rows_learned,
            fingerprint=self.fingerprint, operator=self.operator, started_at=self.started_at,
            metrics={"style_types": len(segmenter.types)}, checkpoint=segmenter.to_bytes(),
            parent_service_number=self.version.service_number if self.version else None, only_if_latest=True,
        )

    def _key(self, customer_id: str) -> str:
        return self.state.key(STYLE_KEY, customer_id)


def _propensities(placed: list[CustomerScores]) -> np.ndarray:
    """Rows x PRODUCTS; a product without a score counts at the prior."""
    if all(tuple(score.product for score in one.scores) == PRODUCTS for one in placed):  # scoring's own order
        return np.array([[score.propensity for score in one.scores] for one in placed])
    return np.array([[by_product.get(product, PRIOR_CONVERSION_RATE) for product in PRODUCTS]
                     for by_product in ({score.product: score.propensity for score in one.scores} for one in placed)])


def _restore(latest: tuple[ModelVersion, bytes | None] | None) -> Segmenter:
    """The latest checkpoint, or a new segmenter; one over another feature set is replaced by a new
    one whose ids start after every id the old one gave, so no id takes a second meaning."""
    if not latest or not latest[1]:
        return Segmenter()
    restored = Segmenter.from_bytes(latest[1])
    if getattr(restored, "trained_on", ()) == STYLE_FEATURES:
        return restored
    next_id = int(latest[0].parameters.get("next_id", 0))
    log.warning("style types start again: the checkpoint has other features",
                extra=facts(service_number=latest[0].service_number, first_id=next_id))
    return Segmenter(first_id=next_id)
