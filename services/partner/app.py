"""partner: the partner's half, deployable on its own with its own Kafka topics and Redis.

Reads its raw feature feed (validated; malformed records to dlq.partner.features.raw), keeps
features and its halves of the federated models, aligns ids with the bank by PSI, answers
partial-score requests and pushes partial scores when a person's features or a model change,
and takes part in federated training, batch runs and the bank's online windows of responses. It
reads only exchange.to_partner from the bank and writes only exchange.to_bank; nothing it sends
carries a feature value (README: what each party learns).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import numpy as np

from services.core import metrics
from services.core.avro import AvroCodec
from services.core.errors import MessageError, ValidationError
from services.core.kafka import HandlerResult, Inbound, Outbound, Stage, attach, avro_decoder
from services.core.logs import facts
from services.core.service import ServiceContext, bootstrap, main
from services.crypto.psi.link import AlignmentLink
from services.models.fedlr import PartnerParty
from services.models.secureboost import PartnerParty as SecureBoostPartner
from services.partner.features import PartnerRecord, feature_vector, parse_feed
from services.partner.store import PartnerModel, PartnerStore
from services.partner.topics import EXCHANGE_TO_PARTNER, PARTNER_FEATURES, RAW_PARTNER_FEATURES
from services.protocol.exchange import check_incoming, envelope, open_payload
from services.protocol.exchange_messages import (
    BatchPlan,
    EncryptedResiduals,
    OnlineSession,
    PartialScores,
    PsiSession,
    SbtDecisions,
    SbtFinish,
    SbtGradients,
    SbtNodeRequest,
    SbtSplits,
    SbtStart,
    ScoreRequest,
    TrainingFinish,
    TrainingRun,
    UnmaskedGradient,
    WindowApplied,
)
from services.protocol.identity import id_hash
from services.protocol.kinds import Kind
from services.protocol.partner_versions import lineage_of, online_version
from services.protocol.stream_messages import ExchangeMessage

SERVICE = "partner"
MAX_SCORES_PER_MESSAGE = 20_000
# A window is a few hundred rows at most: its kernel runs in this process, not on a pool.
ONLINE_WINDOW_WORKERS = 1
log = logging.getLogger(__name__)


class PartnerTraining:
    """The partner's side of one federated training run: w_p over its features as its preparation,
    fitted here on the run's rows (services/models/preparation.py), turns them out; the preparation
    is kept with the model and applied to every partial score, never sent."""

    def __init__(self, run: TrainingRun, features: np.ndarray) -> None:
        self.run = run
        self.party = PartnerParty(run.join_ids, features)
        self.party.on_training_start(run.start)

    def model(self) -> PartnerModel:
        return PartnerModel(self.run.model_name, self.run.version, self.party.weights.copy(), self.party.preparation)


@dataclass
class WindowInFlight:
    """The window of an online session between its BatchPlan and its UnmaskedGradient: the party
    with the masks, and the ids of the answers the bank's next steps must correlate to."""

    index: int
    party: PartnerParty
    base: PartnerModel
    scores_id: str
    masked_id: str = ""


@dataclass
class OnlinePartnerSession:
    """One online session of the bank (one model): its key and settings, and the window in flight.
    Only the window number in the stored half is state that counts: a session lost with a replica is
    reopened by the bank, and an in-flight window started again."""

    session: OnlineSession
    in_flight: WindowInFlight | None = None


class PartnerService:
    def __init__(self, store: PartnerStore, link: AlignmentLink, codec: AvroCodec) -> None:
        self.store = store
        self.link = link
        self.codec = codec
        self._loaded = False
        self.trainings: dict[str, PartnerTraining] = {}
        self.online: dict[str, OnlinePartnerSession] = {}
        self.boostings: dict[str, SecureBoostPartner] = {}
        self.starting: dict[str, list[SbtStart]] = {}  # run id -> the start's chunks so far

    async def _ensure_loaded(self) -> None:
        if not self._loaded:
            await self.link.load()
            self._loaded = True

    async def ingest(self, batch: list[Inbound[PartnerRecord]]) -> list[HandlerResult]:
        """Store the feed's people, publish the validated features, align newcomers, refresh scores."""
        await self._ensure_loaded()
        upserts = [inbound.message for inbound in batch if inbound.message.features is not None]
        deletes = [inbound.message for inbound in batch if inbound.message.features is None]
        await self.store.put_people([
            (record.partner_record_id, id_hash(record.national_id), feature_vector(record.features))  # type: ignore[arg-type]
            for record in upserts
        ])
        await self.store.delete_people([(record.partner_record_id, record.national_id and id_hash(record.national_id))
                                        for record in deletes])
        results: list[HandlerResult] = [[Outbound(PARTNER_FEATURES, inbound.message.partner_record_id,
                                                  inbound.message.features)] for inbound in batch]
        extra: list[Outbound] = []
        if self.link.party is not None and upserts:
            extra += await self.link.blind([id_hash(record.national_id) for record in upserts])  # type: ignore[arg-type]
        join_ids = [join_id for join_id in await self.store.join_ids_of([r.partner_record_id for r in upserts]) if join_id]
        extra += await self.partial_score_messages(join_ids)
        return attach(results, extra)

    async def exchange(self, batch: list[Inbound[ExchangeMessage]]) -> list[HandlerResult]:
        """The bank's messages; one that is refused goes to the DLQ with its reason, the rest go on."""
        await self._ensure_loaded()
        results: list[HandlerResult] = []
        for inbound in batch:
            try:
                results.append(await self._from_bank(inbound.message))
            except MessageError as error:
                results.append(error)
        return results

    async def _from_bank(self, message: ExchangeMessage) -> list[Outbound]:
        kind = check_incoming(message, "partner")
        if kind.message is PsiSession:
            return await self._join_session(message)
        if kind.message is ScoreRequest:
            self.link.check_session(message)
            request = open_payload(self.codec, message, ScoreRequest)
            return await self.partial_score_messages(list(request.join_ids), message.message_id)
        if kind.protocol == "fedlr":
            return await self._training_step(message, kind)
        if kind.protocol == "sbt":
            return await self._secureboost_step(message, kind)
        started = time.perf_counter()
        replies, joined = await self.link.handle(message)
        metrics.PARTNER_EXCHANGE_SECONDS.labels(message.kind).observe(time.perf_counter() - started)
        links = await self.store.link_join_ids(joined)
        return replies + await self.partial_score_messages(list(links))

    async def _training_step(self, message: ExchangeMessage, kind: Kind) -> list[Outbound]:
        """One step of a federated training run the bank drives (services/models/fedlr.py)."""
        run_id = message.session_id
        if kind.message is OnlineSession:
            return await self._open_online(message)
        if run_id in self.online:
            return await self._online_step(message, kind, self.online[run_id])
        if kind.message is TrainingRun:
            run = open_payload(self.codec, message, TrainingRun)
            features = await self.store.features_by_join_id(list(run.join_ids))
            missing = len(run.join_ids) - len(features)
            if missing:
                raise ValidationError(f"{missing} training join ids are not aligned people of ours", reason="unknown_join_ids")
            self.trainings[run_id] = PartnerTraining(run, np.vstack([features[j] for j in run.join_ids]))
            return []
        training = self.trainings.get(run_id)
        if training is None:
            raise ValidationError(f"no training run {run_id[:8]}.. in progress", reason="unknown_training_run")
        party = training.party
        if kind.message is BatchPlan:
            plan = open_payload(self.codec, message, BatchPlan)
            scores = await asyncio.to_thread(party.scores_step, plan)
            return [envelope(self.codec, scores, "partner", run_id, message.message_id)]
        if kind.message is EncryptedResiduals:
            residuals = open_payload(self.codec, message, EncryptedResiduals)
            # The kernel runs on the party's process pool; the event loop (heartbeats, /readyz) stays free.
            started = time.perf_counter()
            masked = await asyncio.to_thread(party.gradient_step, residuals)
            metrics.PARTNER_EXCHANGE_SECONDS.labels("fedlr_gradient").observe(time.perf_counter() - started)
            rows, features = party.last_batch_shape
            metrics.PAILLIER_OPERATIONS.labels(SERVICE, "ciphertext_scalar_products").inc(rows * features)
            metrics.PAILLIER_OPERATIONS.labels(SERVICE, "encrypt").inc(features)
            return [envelope(self.codec, masked, "partner", run_id, message.message_id)]
        if kind.message is UnmaskedGradient:
            await asyncio.to_thread(party.update_step, open_payload(self.codec, message, UnmaskedGradient))
            return []
        if kind.message is TrainingFinish:
            open_payload(self.codec, message, TrainingFinish)
            del self.trainings[run_id]
            party.close()
            await self.store.put_model(training.model())
            return await self.partial_score_messages(await self.store.all_aligned_join_ids())
        raise ValidationError(f"unknown training step {message.kind!r}", reason="unknown_kind")

    async def _open_online(self, message: ExchangeMessage) -> list[Outbound]:
        """The bank (re)opens online learning of a model: one session per model, the latest wins."""
        session = open_payload(self.codec, message, OnlineSession)
        stored = await self.store.model(session.model_name)
        if stored is None or lineage_of(stored.version) != lineage_of(session.partner_version):
            raise ValidationError(f"no partner half of {session.model_name} in the lineage of "
                                  f"{session.partner_version!r}", reason="unknown_partner_version")
        for session_id in [sid for sid, known in self.online.items() if known.session.model_name == session.model_name]:
            self._drop_online(session_id)
        self.online[message.session_id] = OnlinePartnerSession(session)
        return []

    def _drop_online(self, session_id: str) -> None:
        dropped = self.online.pop(session_id)
        if dropped.in_flight is not None:
            dropped.in_flight.party.close()

    async def _online_step(self, message: ExchangeMessage, kind: Kind, online: OnlinePartnerSession) -> list[Outbound]:
        """One step of an online window (services/models/online_federated.py). The stored half's
        window number decides: a window at or below it is applied already (the bank is told so, and
        the new scores pushed again in case their first push died with a crashed transaction); the
        next one is computed; anything else is refused."""
        session_id, name = message.session_id, online.session.model_name
        stored = await self.store.model(name)
        if stored is None or lineage_of(stored.version) != lineage_of(online.session.partner_version):
            raise ValidationError(f"the partner half of {name} left the session's lineage", reason="unknown_partner_version")
        if kind.message is BatchPlan:
            plan = open_payload(self.codec, message, BatchPlan)
            if plan.batch_index <= stored.window:
                return [self._applied(stored, session_id, message.message_id)]
            if plan.batch_index != stored.window + 1:
                raise ValidationError(f"window {plan.batch_index} of {name}: the partner has applied "
                                      f"{stored.window}", reason="window_out_of_order")
            return await self._start_window(plan, stored, online, message)
        in_flight = online.in_flight
        if kind.message is EncryptedResiduals:
            residuals = open_payload(self.codec, message, EncryptedResiduals)
            if in_flight is None or (residuals.batch_index, message.correlation_id) != (in_flight.index,
                                                                                          in_flight.scores_id):
                raise ValidationError(f"residuals of window {residuals.batch_index} answer no scores in flight",
                                      reason="stale_training_step")
            masked = await asyncio.to_thread(in_flight.party.gradient_step, residuals)
            rows, columns = in_flight.party.last_batch_shape
            metrics.PAILLIER_OPERATIONS.labels(SERVICE, "ciphertext_scalar_products").inc(rows * columns)
            answer = envelope(self.codec, masked, "partner", session_id, message.message_id)
            in_flight.masked_id = answer.message.message_id
            return [answer]
        if kind.message is UnmaskedGradient:
            unmasked = open_payload(self.codec, message, UnmaskedGradient)
            if unmasked.batch_index <= stored.window:  # a replay: applied before (its outputs may have been lost)
                return [self._applied(stored, session_id, message.message_id),
                        *await self.partial_score_messages(await self.store.all_aligned_join_ids())]
            if in_flight is None or (unmasked.batch_index, message.correlation_id) != (in_flight.index,
                                                                                         in_flight.masked_id):
                raise ValidationError(f"gradient of window {unmasked.batch_index} answers no masked gradient in flight",
                                      reason="stale_training_step")
            online.in_flight = None
            await asyncio.to_thread(in_flight.party.update_step, unmasked)
            in_flight.party.close()
            base = in_flight.base
            moved = PartnerModel(name, online_version(lineage_of(base.version), in_flight.index),
                                 in_flight.party.weights.copy(), base.preparation, in_flight.index)
            if not await self.store.put_next_window(moved):
                raise ValidationError(f"window {moved.window} of {name} was applied by another writer",
                                      reason="stale_training_step")
            log.info("online window applied", extra=facts(model=name, window=moved.window))
            return [self._applied(moved, session_id, message.message_id),
                    *await self.partial_score_messages(await self.store.all_aligned_join_ids())]
        raise ValidationError(f"{message.kind} is not a step of an online session", reason="unknown_kind")

    async def _start_window(self, plan: BatchPlan, stored: PartnerModel, online: OnlinePartnerSession,
                            message: ExchangeMessage) -> list[Outbound]:
        """Step 1 of a window: w_p . x_p for its rows, on a party holding the stored half's weights."""
        distinct = list(dict.fromkeys(plan.join_ids))  # one customer may respond twice in a window
        features = await self.store.features_by_join_id(distinct)
        if len(features) != len(distinct):
            raise ValidationError(f"{len(distinct) - len(features)} window join ids are not aligned people of ours",
                                  reason="unknown_join_ids")
        # The stored half's own preparation, never one fitted on the window's rows.
        party = PartnerParty(distinct, np.vstack([features[j] for j in distinct]), preparation=stored.preparation,
                             workers=ONLINE_WINDOW_WORKERS)
        party.weights = stored.weights.copy()
        party.on_training_start(online.session.start)
        scores = await asyncio.to_thread(party.scores_step, plan)
        answer = envelope(self.codec, scores, "partner", message.session_id, message.message_id)
        if online.in_flight is not None:
            online.in_flight.party.close()
        online.in_flight = WindowInFlight(plan.batch_index, party, stored, answer.message.message_id)
        return [answer]

    def _applied(self, model: PartnerModel, session_id: str, answering: str) -> Outbound:
        return envelope(self.codec, WindowApplied(model.name, model.window, model.version), "partner", session_id,
                        answering)

    async def _secureboost_step(self, message: ExchangeMessage, kind: Kind) -> list[Outbound]:
        """One step of a SecureBoost training the bank drives (services/models/secureboost); the
        histograms run on the party's process pool, off the event loop."""
        run_id = message.session_id
        if kind.message is SbtStart:
            chunk = open_payload(self.codec, message, SbtStart)
            chunks = self.starting.setdefault(run_id, [])
            if chunk.offset == 0:
                chunks.clear()
            chunks.append(chunk)
            if chunk.offset + len(chunk.join_ids) < chunk.total_rows:
                return []
            start = chunks[0].joined(chunks[1:])
            del self.starting[run_id]
            features = await self.store.features_by_join_id(list(start.join_ids))
            missing = len(start.join_ids) - len(features)
            if missing:
                raise ValidationError(f"{missing} training join ids are not aligned people of ours", reason="unknown_join_ids")
            party = SecureBoostPartner(start.join_ids, np.vstack([features[j] for j in start.join_ids]))
            await asyncio.to_thread(party.on_start, start)
            self.boostings[run_id] = party
            return []
        party = self.boostings.get(run_id)
        if party is None:
            raise ValidationError(f"no SecureBoost training {run_id[:8]}.. in progress", reason="unknown_training_run")
        if kind.message is SbtGradients:
            await asyncio.to_thread(party.on_gradients, open_payload(self.codec, message, SbtGradients))
            return []
        if kind.message is SbtNodeRequest:
            started = time.perf_counter()
            histograms = await asyncio.to_thread(party.histograms, open_payload(self.codec, message, SbtNodeRequest))
            metrics.PARTNER_EXCHANGE_SECONDS.labels("sbt_histograms").observe(time.perf_counter() - started)
            return [envelope(self.codec, histograms, "partner", run_id, message.message_id)]
        if kind.message is SbtSplits:
            rows = await asyncio.to_thread(party.split_rows, open_payload(self.codec, message, SbtSplits))
            return [envelope(self.codec, rows, "partner", run_id, message.message_id)]
        if kind.message is SbtFinish:
            finish = open_payload(self.codec, message, SbtFinish)
            party.on_finish(finish)
            del self.boostings[run_id]
            party.close()
            await self.store.put_split_table(finish.model_name, finish.version, party.split_table)
            return await self.partial_score_messages(await self.store.all_aligned_join_ids())
        raise ValidationError(f"unknown SecureBoost step {message.kind!r}", reason="unknown_kind")

    async def _join_session(self, message: ExchangeMessage) -> list[Outbound]:
        """A new session from the bank: align everyone we hold from scratch (join ids change)."""
        if not await self.link.join_session(message):
            return []
        return await self.link.blind(await self.store.all_identity_hashes())

    async def partial_score_messages(self, join_ids: list[str], correlation_id: str = "") -> list[Outbound]:
        """w_p . x_p of every partner model, and the bit of every split of every SecureBoost model, for
        the aligned people among `join_ids`; never a feature. People we do not hold are left out."""
        models = await self.store.models()
        tables = await self.store.split_tables()
        features = await self.store.features_by_join_id(join_ids)
        if not (models or tables) or not features or self.link.party is None:
            return []
        ids = list(features)
        matrix = np.vstack([features[join_id] for join_id in ids])
        per_model = {model.name: model.partial_scores(matrix) for model in models}
        versions = {model.name: model.version for model in models}
        names = sorted(tables)
        bitmaps = [np.packbits(tables[name][1].decisions(matrix), axis=1) for name in names]
        messages = []
        for start in range(0, len(ids), MAX_SCORES_PER_MESSAGE):
            chunk = ids[start:start + MAX_SCORES_PER_MESSAGE]
            if models:
                scores = {join_id: {name: float(values[start + row]) for name, values in per_model.items()}
                          for row, join_id in enumerate(chunk)}
                messages.append(envelope(self.codec, PartialScores.of(versions, scores), "partner", self.link.session_hex,
                                         correlation_id))
            if names:
                body = np.hstack([bits[start:start + len(chunk)] for bits in bitmaps]).tobytes()
                decisions = SbtDecisions(tuple(names), tuple(tables[name][0] for name in names),
                                         tuple(len(tables[name][1].rules) for name in names), tuple(chunk), body)
                messages.append(envelope(self.codec, decisions, "partner", self.link.session_hex, correlation_id))
        return messages

def build() -> ServiceContext:
    context = bootstrap(SERVICE, needs_redis=True, active_standby=True)
    assert context.redis is not None
    prefix = context.settings.redis_key_prefix
    service = PartnerService(PartnerStore(context.redis, prefix), AlignmentLink(context.redis, prefix, "partner", context.codec),
                             context.codec)
    context.add_stage(Stage(SERVICE, RAW_PARTNER_FEATURES, parse_feed, service.ingest, context.publisher,
                            context.dead_letters))
    context.add_stage(Stage(SERVICE, EXCHANGE_TO_PARTNER, avro_decoder(context.codec, ExchangeMessage), service.exchange,
                            context.publisher, context.dead_letters))
    return context


if __name__ == "__main__":
    main(build)
