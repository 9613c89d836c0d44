"""The console's view of each customer: profile, national id, latest scores, offers and responses.

Where it comes from: the console consumes the bank's topics (`customer.profiles`,
`customer.identities`, `scores`, `offers.<channel>`, `responses`) into its own small SQL tables,
keyed by customer, through the stage runner like every other service (app.py). It does not read
scoring's or dispatch's Redis: those keys are laid out for the hot path (and expire), while an
operator asks "what happened to this customer", which these tables answer in one query each, on
SQLite or PostgreSQL, beside the audit log. Each kind keeps the latest `console_customer_history`
rows per customer; a replayed message is recognised by its id and not stored twice.

An erased customer (a tombstone on `customer.profiles`) is deleted from every table here at once,
and the erasure is written to the audit log.

The national id is stored as the bank's topic carries it and leaves this module masked
(`CustomerRecord.masked`); only `national_id_of` returns it in full, for the reveal endpoint,
which re-authenticates the user and logs the reveal.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import BigInteger, Integer, String, Text, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from services.console.audit import AuditLog
from services.core.kafka import HandlerResult, Inbound
from services.core.logs import mask
from services.core.sql import Base, ensure_tables
from services.protocol.stream_messages import CustomerIdentity, CustomerProfile, CustomerScores, Offer, OfferResponse

FEED_ACTOR = "system:feed"


class ProfileRow(Base):
    __tablename__ = "console_customer_profiles"

    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    document: Mapped[str] = mapped_column(Text)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class IdentityRow(Base):
    __tablename__ = "console_customer_identities"

    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    national_id: Mapped[str] = mapped_column(String(32))
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class _History:
    """One row per message, the newest `console_customer_history` of each customer kept."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(64), index=True)
    message_id: Mapped[str] = mapped_column(String(128), unique=True)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    document: Mapped[str] = mapped_column(Text)


class ScoreRow(_History, Base):
    __tablename__ = "console_customer_scores"


class OfferRow(_History, Base):
    __tablename__ = "console_customer_offers"


class ResponseRow(_History, Base):
    __tablename__ = "console_customer_responses"


TABLES = (ProfileRow, IdentityRow, ScoreRow, OfferRow, ResponseRow)
HISTORY = {"scores": ScoreRow, "offers": OfferRow, "responses": ResponseRow}


@dataclass(frozen=True)
class CustomerRecord:
    customer_id: str
    profile: dict[str, Any] | None
    national_id: str | None
    scores: list[dict[str, Any]]
    offers: list[dict[str, Any]]
    responses: list[dict[str, Any]]

    def masked(self) -> dict[str, Any]:
        """What any response shows: the national id masked (`110***********002X`)."""
        return {"customer_id": self.customer_id, "profile": self.profile,
                "national_id": None if self.national_id is None else mask(self.national_id),
                "scores": self.scores, "offers": self.offers, "responses": self.responses}


REVEALABLE = ("national_id",)


class CustomerView:
    def __init__(self, engine: Engine, audit: AuditLog, history: int) -> None:
        self.engine = engine
        self.audit = audit
        self.history = history
        ensure_tables(engine, [Base.metadata.tables[table.__tablename__] for table in TABLES])

    # --- reading (the API and pages) ----------------------------------------------------------
    def customer(self, customer_id: str) -> CustomerRecord | None:
        """Everything the console holds about a customer, newest first; None when it holds nothing."""
        with Session(self.engine) as session:
            profile = session.get(ProfileRow, customer_id)
            identity = session.get(IdentityRow, customer_id)
            kinds = {kind: [json.loads(row.document) for row in session.scalars(
                select(table).where(table.customer_id == customer_id).order_by(table.at_ms.desc(), table.id.desc()))]
                for kind, table in HISTORY.items()}
        if profile is None and identity is None and not any(kinds.values()):
            return None
        return CustomerRecord(customer_id, None if profile is None else json.loads(profile.document),
                              None if identity is None else identity.national_id, **kinds)

    def national_id_of(self, customer_id: str) -> str | None:
        with Session(self.engine) as session:
            identity = session.get(IdentityRow, customer_id)
            return None if identity is None else identity.national_id

    # --- the feed (stage handlers) --------------------------------------------------------------
    async def feed_profiles(self, batch: list[Inbound[CustomerProfile | None]]) -> list[HandlerResult]:
        await asyncio.to_thread(self._store_profiles, batch)
        return [[] for _ in batch]

    async def feed_identities(self, batch: list[Inbound[CustomerIdentity | None]]) -> list[HandlerResult]:
        await asyncio.to_thread(self._store_identities, batch)
        return [[] for _ in batch]

    async def feed_scores(self, batch: list[Inbound[CustomerScores]]) -> list[HandlerResult]:
        await asyncio.to_thread(self._store_history, "scores", [
            (s.customer_id, s.event_id, s.scored_at_ms, {
                "event_id": s.event_id, "event_type": s.event_type, "scored_at_ms": s.scored_at_ms,
                "segment": s.segment, "scores": [asdict(score) for score in s.scores]})
            for s in (inbound.message for inbound in batch)])
        return [[] for _ in batch]

    async def feed_offers(self, batch: list[Inbound[Offer]]) -> list[HandlerResult]:
        await asyncio.to_thread(self._store_history, "offers", [
            (o.customer_id, o.offer_id, o.decided_at_ms, {
                "offer_id": o.offer_id, "campaign_id": o.campaign_id, "product": o.product, "channel": o.channel,
                "message": o.message, "propensity": o.propensity, "trigger": o.trigger, "decided_at_ms": o.decided_at_ms,
                "model_version": o.model_version, "service_number": o.service_number})
            for o in (inbound.message for inbound in batch)])
        return [[] for _ in batch]

    async def feed_responses(self, batch: list[Inbound[OfferResponse]]) -> list[HandlerResult]:
        await asyncio.to_thread(self._store_history, "responses", [
            (r.customer_id, r.response_id, r.occurred_at_ms, {
                "response_id": r.response_id, "offer_id": r.offer_id, "campaign_id": r.campaign_id,
                "channel": r.channel, "outcome": r.outcome, "occurred_at_ms": r.occurred_at_ms})
            for r in (inbound.message for inbound in batch)])
        return [[] for _ in batch]

    def _store_profiles(self, batch: Sequence[Inbound[CustomerProfile | None]]) -> None:
        erased: list[str] = []
        with Session(self.engine) as session, session.begin():
            for inbound in batch:
                if inbound.message is None:
                    erased.append((inbound.key or b"").decode())
                    continue
                profile = asdict(inbound.message)
                session.merge(ProfileRow(customer_id=profile["customer_id"], document=json.dumps(profile),
                                         updated_at_ms=profile["updated_at_ms"]))
            for customer_id in erased:
                for table in TABLES:
                    session.execute(delete(table).where(table.customer_id == customer_id))
        for customer_id in erased:
            self.audit.append(actor=FEED_ACTOR, action="customer.erased", target=f"customer:{customer_id}",
                              customer_id=customer_id, detail={"tables": [table.__tablename__ for table in TABLES]})

    def _store_identities(self, batch: Sequence[Inbound[CustomerIdentity | None]]) -> None:
        with Session(self.engine) as session, session.begin():
            for inbound in batch:
                if inbound.message is None:
                    session.execute(delete(IdentityRow).where(IdentityRow.customer_id == (inbound.key or b"").decode()))
                else:
                    identity = inbound.message
                    session.merge(IdentityRow(customer_id=identity.customer_id, national_id=identity.national_id,
                                              updated_at_ms=identity.updated_at_ms))

    def _store_history(self, kind: str, rows: list[tuple[str, str, int, dict[str, Any]]]) -> None:
        if not rows:
            return
        table = HISTORY[kind]
        values = [{"customer_id": customer_id, "message_id": message_id, "at_ms": at_ms, "document": json.dumps(document)}
                  for customer_id, message_id, at_ms, document in rows]
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        with Session(self.engine) as session, session.begin():
            # A replayed batch (at-least-once) brings the same message ids: stored once.
            session.execute(dialect.insert(table).values(values).on_conflict_do_nothing(index_elements=["message_id"]))
            for customer_id in {row[0] for row in rows}:
                newest = (select(table.id).where(table.customer_id == customer_id)
                          .order_by(table.at_ms.desc(), table.id.desc()).limit(self.history))
                session.execute(delete(table).where(table.customer_id == customer_id, table.id.not_in(newest.scalar_subquery())))
