"""Campaigns the console API manages, kept in SQL beside the model registry.

Each campaign is stored as its validated document (the same pydantic `Campaign` the YAML file
uses, so both paths accept and refuse exactly the same things). Every change is appended to
`campaign_changes` with who made it and when: the audit trail, and the revision number dispatch
workers poll to pick up changes without a restart.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, create_engine, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from services.campaigns.definitions import Campaign
from services.core.sql import Base, ensure_tables


class CampaignRow(Base):
    __tablename__ = "campaigns"

    campaign_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(128))


class CampaignChangeRow(Base):
    __tablename__ = "campaign_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(16))  # created, updated, deleted
    document: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    actor: Mapped[str] = mapped_column(String(128))
    changed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class CampaignChange:
    revision: int
    campaign_id: str
    action: str
    actor: str
    changed_at: dt.datetime
    document: dict[str, Any] | None


class CampaignStore:
    """Create, change, delete and list console campaigns; every write is one transaction."""

    def __init__(self, database_url: str) -> None:
        self.engine: Engine = create_engine(database_url, pool_pre_ping=True)
        ensure_tables(self.engine, [Base.metadata.tables[CampaignRow.__tablename__],
                                    Base.metadata.tables[CampaignChangeRow.__tablename__]])

    def all(self) -> list[Campaign]:
        with Session(self.engine) as session:
            rows = session.scalars(select(CampaignRow).order_by(CampaignRow.campaign_id))
            return [Campaign.model_validate(row.document) for row in rows]

    def get(self, campaign_id: str) -> Campaign | None:
        with Session(self.engine) as session:
            row = session.get(CampaignRow, campaign_id)
            return None if row is None else Campaign.model_validate(row.document)

    def put(self, campaign: Campaign, actor: str) -> CampaignChange:
        """Create or replace; returns the change (its revision) as recorded."""
        document = campaign.model_dump(mode="json")
        now = dt.datetime.now(dt.UTC)
        with Session(self.engine) as session, session.begin():
            row = session.get(CampaignRow, campaign.campaign_id, with_for_update=True)
            action = "created" if row is None else "updated"
            if row is None:
                session.add(CampaignRow(campaign_id=campaign.campaign_id, document=document, updated_at=now,
                                        updated_by=actor))
            else:
                row.document, row.updated_at, row.updated_by = document, now, actor
            return self._record(session, campaign.campaign_id, action, document, actor, now)

    def delete(self, campaign_id: str, actor: str) -> CampaignChange | None:
        """Remove a campaign (its history stays); None when there was no such campaign."""
        now = dt.datetime.now(dt.UTC)
        with Session(self.engine) as session, session.begin():
            row = session.get(CampaignRow, campaign_id, with_for_update=True)
            if row is None:
                return None
            session.delete(row)
            return self._record(session, campaign_id, "deleted", None, actor, now)

    def revision(self) -> int:
        """The number of the latest change (0: none): dispatch reloads when it moves."""
        with Session(self.engine) as session:
            return int(session.scalar(select(func.max(CampaignChangeRow.id))) or 0)

    def history(self, campaign_id: str) -> list[CampaignChange]:
        with Session(self.engine) as session:
            rows = session.scalars(select(CampaignChangeRow).where(CampaignChangeRow.campaign_id == campaign_id)
                                   .order_by(CampaignChangeRow.id))
            return [_change(row) for row in rows]

    def close(self) -> None:
        self.engine.dispose()

    @staticmethod
    def _record(session: Session, campaign_id: str, action: str, document: dict[str, Any] | None, actor: str,
                now: dt.datetime) -> CampaignChange:
        change = CampaignChangeRow(campaign_id=campaign_id, action=action, document=document, actor=actor,
                                   changed_at=now)
        session.add(change)
        session.flush()
        return _change(change)


def _change(row: CampaignChangeRow) -> CampaignChange:
    return CampaignChange(row.id, row.campaign_id, row.action, row.actor, row.changed_at, row.document)
