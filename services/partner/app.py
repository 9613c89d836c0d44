"""partner: the partner's half, deployable on its own with its own Kafka topics and Redis.

Reads its raw feature feed (validated; malformed records to dlq.partner.features.raw), keeps
features and its halves of the federated models, aligns ids with the bank by PSI, answers
partial-score requests and pushes partial scores when a person's features or a model change,
and takes part in federated training. It reads only exchange.to_partner from the bank and
writes only exchange.to_bank; nothing it sends carries a feature value (README: what each
party learns).
"""
from __future__ import annotations

import asyncio
import time

import numpy as np

from services.core import metrics
from services.core.avro import AvroCodec
from services.core.errors import MessageError, ValidationError
from services.core.kafka import HandlerResult, Inbound, Outbound, Stage, attach, avro_decoder
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
)
from services.protocol.identity import id_hash
from services.protocol.kinds import Kind
from services.protocol.stream_messages import ExchangeMessage

SERVICE = "partner"
MAX_SCORES_PER_MESSAGE = 20_000


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


class PartnerService:
    def __init__(self, store: PartnerStore, link: AlignmentLink, codec: AvroCodec) -> None:
        self.store = store
        self.link = link
        self.codec = codec
        self._loaded = False
        self.trainings: dict[str, PartnerTraining] = {}
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
