"""exchange: the bank's side of the partner exchange.

Aligns the bank's customers with the partner's records by PSI over the exchange topics (on
identity hashes from customer.identities, the only reader of that topic), asks the partner for
partial scores of newly aligned customers and stores every partial score and SecureBoost split
decision it receives for the scoring service, under the keys of services/protocol/bank_keys.py.
"""
from __future__ import annotations

import time

import redis.asyncio as aioredis

from services.core import metrics
from services.core.avro import AvroCodec
from services.core.errors import MessageError
from services.core.kafka import HandlerResult, Inbound, Outbound, Stage, attach, avro_decoder, tombstone_decoder
from services.core.service import ServiceContext, bootstrap, main
from services.crypto.psi.link import AlignmentLink
from services.exchange.topics import CUSTOMER_IDENTITIES, EXCHANGE_TO_BANK
from services.protocol.bank_keys import BankKeys, partial_score_value, split_decisions_value
from services.protocol.exchange import check_incoming, envelope, open_payload
from services.protocol.exchange_messages import PartialScores, SbtDecisions, ScoreRequest
from services.protocol.identity import id_hash
from services.protocol.stream_messages import CustomerIdentity, ExchangeMessage

SERVICE = "exchange"
MAX_IDS_PER_REQUEST = 100_000


class BankExchange:
    def __init__(self, redis: aioredis.Redis, key_prefix: str, codec: AvroCodec) -> None:
        self.redis = redis
        self.keys = BankKeys(key_prefix)
        self.codec = codec
        self.link = AlignmentLink(redis, key_prefix, "bank", codec)
        self._loaded = False

    async def _load(self) -> None:
        """Carry on with the saved session, once, before the first message is handled: a replica that
        has just taken the lease over must not take the partner's answers for a session it has not read."""
        if not self._loaded:
            self._loaded = True
            await self.link.load()

    async def _session_messages(self) -> list[Outbound]:
        """Carry on with the saved session, or open one (the partner joins it)."""
        await self._load()
        if self.link.party is not None:
            return []
        return [await self.link.open_session()]

    async def identities(self, batch: list[Inbound[CustomerIdentity | None]]) -> list[HandlerResult]:
        """Remember which customer each identity hash is, and align the new ones."""
        extra = await self._session_messages()
        pipeline = self.redis.pipeline(transaction=False)
        hashes = []
        erased = []
        for inbound in batch:
            if inbound.message is None:
                erased.append((inbound.key or b"").decode())
                continue
            identity_hash = id_hash(inbound.message.national_id)
            pipeline.set(self.keys.nid(identity_hash), inbound.message.customer_id)
            hashes.append(identity_hash)
        await pipeline.execute()
        if erased:
            await self._erase(erased)
        extra += await self.link.blind(hashes)
        return attach([[] for _ in batch], extra)

    async def _erase(self, customer_ids: list[str]) -> None:
        """An erased customer's join id and partial scores go; PSI's blinded points are not
        reversible and expire with the session."""
        join_ids = await self.redis.mget([self.keys.join(customer) for customer in customer_ids])
        keys = [self.keys.join(customer) for customer in customer_ids]
        keys += [key for join_id in join_ids if join_id
                 for key in (self.keys.partial(join_id.decode()), self.keys.sbt(join_id.decode()))]
        await self.redis.delete(*keys)

    async def exchange(self, batch: list[Inbound[ExchangeMessage]]) -> list[HandlerResult]:
        """The partner's messages; one that is refused goes to the DLQ with its reason, the rest go on."""
        await self._load()
        results: list[HandlerResult] = []
        for inbound in batch:
            try:
                results.append(await self._from_partner(inbound.message))
            except MessageError as error:
                results.append(error)
        return results

    async def _from_partner(self, message: ExchangeMessage) -> list[Outbound]:
        kind = check_incoming(message, "bank")
        if kind.protocol in ("fedlr", "sbt"):
            return []  # a training run's reply: read by the training job, not by this service
        if kind.message is PartialScores:
            self.link.check_session(message)
            await self._store_partial_scores(open_payload(self.codec, message, PartialScores))
            return []
        if kind.message is SbtDecisions:
            self.link.check_session(message)
            await self._store_split_decisions(open_payload(self.codec, message, SbtDecisions))
            return []
        started = time.perf_counter()
        replies, joined = await self.link.handle(message)
        metrics.PARTNER_EXCHANGE_SECONDS.labels(message.kind).observe(time.perf_counter() - started)
        return replies + await self._link_and_request(joined)

    async def _link_and_request(self, joined: dict[str, str]) -> list[Outbound]:
        """Record new matches (identity hash -> join id) and ask for their partial scores."""
        if not joined:
            return []
        hashes = list(joined)
        customers = await self.redis.mget([self.keys.nid(identity_hash) for identity_hash in hashes])
        pipeline = self.redis.pipeline(transaction=False)
        join_ids = []
        for identity_hash, customer in zip(hashes, customers):
            if customer is not None:
                pipeline.set(self.keys.join(customer.decode()), joined[identity_hash])
                join_ids.append(joined[identity_hash])
        await pipeline.execute()
        return [envelope(self.codec, ScoreRequest.of(join_ids[start:start + MAX_IDS_PER_REQUEST]), "bank",
                         self.link.session_hex)
                for start in range(0, len(join_ids), MAX_IDS_PER_REQUEST)]

    async def _store_partial_scores(self, answer: PartialScores) -> None:
        pipeline = self.redis.pipeline(transaction=False)
        versions = answer.model_versions
        for join_id, per_model in answer.per_join_id().items():
            if per_model:
                pipeline.hset(self.keys.partial(join_id), mapping={
                    model: partial_score_value(versions[model], score) for model, score in per_model.items()})
        await pipeline.execute()


    async def _store_split_decisions(self, answer: SbtDecisions) -> None:
        """Per person and SecureBoost model, the partner's bit per split, with the partner half's version."""
        pipeline = self.redis.pipeline(transaction=False)
        per_model = {model: answer.bitmaps(model) for model in answer.models}
        for join_id in answer.join_ids:
            pipeline.hset(self.keys.sbt(join_id), mapping={
                model: split_decisions_value(version, per_model[model][join_id])
                for model, version in zip(answer.models, answer.versions)})
        await pipeline.execute()


def build() -> ServiceContext:
    context = bootstrap(SERVICE, needs_redis=True, active_standby=True)
    assert context.redis is not None
    bank = BankExchange(context.redis, context.settings.redis_key_prefix, context.codec)
    context.add_stage(Stage(SERVICE, CUSTOMER_IDENTITIES, tombstone_decoder(context.codec, CustomerIdentity),
                            bank.identities, context.publisher,
                            context.dead_letters))
    context.add_stage(Stage(SERVICE, EXCHANGE_TO_BANK, avro_decoder(context.codec, ExchangeMessage), bank.exchange,
                            context.publisher, context.dead_letters))
    return context


if __name__ == "__main__":
    main(build)
