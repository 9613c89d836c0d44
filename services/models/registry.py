"""The model registry: every model version with its lineage, checkpoint and unique service number.

Each version records what the regulator's traceability items ask: a SHA-256 fingerprint of
the data it learned from, row and feature counts, the time window of that data, parameters,
iterations, operator, start and end timestamps, its parent version, and a unique service
number (the model's watermark) that every score carries. Deployments are recorded too.
SQLite by default, PostgreSQL in production (DATABASE_URL); the schema is created on first use.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, LargeBinary, String, create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from services.core.sql import Base, ensure_tables


class ModelVersionRow(Base):
    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    service_number: Mapped[str] = mapped_column(String(64), unique=True)
    parent_service_number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    algorithm: Mapped[str] = mapped_column(String(64))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    feature_names: Mapped[list[str]] = mapped_column(JSON)
    rows_learned: Mapped[int] = mapped_column(Integer)
    iterations: Mapped[int] = mapped_column(Integer)
    data_fingerprint: Mapped[str] = mapped_column(String(64))
    data_window_start_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    data_window_end_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    operator: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    checkpoint: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class DeploymentRow(Base):
    __tablename__ = "model_deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_number: Mapped[str] = mapped_column(ForeignKey("model_versions.service_number"), index=True)
    deployed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    operator: Mapped[str] = mapped_column(String(128))
    target: Mapped[str] = mapped_column(String(128))
    result: Mapped[str] = mapped_column(String(32))


@dataclass(frozen=True)
class ModelVersion:
    """What a caller gets back: the version's identity and lineage (the checkpoint separately)."""

    model_name: str
    version: int
    service_number: str
    parent_service_number: str | None
    rows_learned: int
    data_fingerprint: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Deployment:
    deployed_at: dt.datetime
    operator: str
    target: str
    result: str


@dataclass(frozen=True)
class VersionDetails:
    """Everything the registry records of a version but its checkpoint (what the console shows)."""

    model_name: str
    version: int
    service_number: str
    parent_service_number: str | None
    algorithm: str
    parameters: dict[str, Any]
    feature_names: list[str]
    rows_learned: int
    iterations: int
    data_fingerprint: str
    data_window_start_ms: int | None
    data_window_end_ms: int | None
    metrics: dict[str, Any]
    operator: str
    started_at: dt.datetime
    finished_at: dt.datetime
    deployments: tuple[Deployment, ...]


class DataFingerprint:
    """A running SHA-256 over the training rows in the order they were learned.

    >>> fingerprint = DataFingerprint()
    >>> fingerprint.update([1.0, 2.0], True)
    >>> len(fingerprint.hexdigest())
    64
    """

    def __init__(self, previous: str = "") -> None:
        self._hash = hashlib.sha256(previous.encode())
        self.window_start_ms: int | None = None
        self.window_end_ms: int | None = None

    def update(self, features: list[float], label: bool, at_ms: int | None = None) -> None:
        self._hash.update(json.dumps([features, label]).encode())
        if at_ms is not None:
            self.window_start_ms = at_ms if self.window_start_ms is None else min(self.window_start_ms, at_ms)
            self.window_end_ms = at_ms if self.window_end_ms is None else max(self.window_end_ms, at_ms)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def new_service_number(model_name: str, version: int) -> str:
    """A unique, human-readable service number: `CS-<model>-v<version>-<random>`.

    >>> new_service_number("propensity.credit_card", 3).startswith("CS-PROPENSITY.CREDIT_CARD-v3-")
    True
    """
    return f"CS-{model_name.upper()}-v{version}-{secrets.token_hex(4)}"


class ModelRegistry:
    """Records and loads model versions in a SQL database."""

    def __init__(self, database_url: str) -> None:
        self.engine: Engine = create_engine(database_url, pool_pre_ping=True)
        ensure_tables(self.engine, [Base.metadata.tables[ModelVersionRow.__tablename__],
                                    Base.metadata.tables[DeploymentRow.__tablename__]])

    def register(
        self, *, model_name: str, algorithm: str, parameters: dict[str, Any], feature_names: list[str],
        rows_learned: int, iterations: int, fingerprint: DataFingerprint, operator: str, started_at: dt.datetime,
        metrics: dict[str, Any] | None = None, checkpoint: bytes | None = None, parent_service_number: str | None = None,
    ) -> ModelVersion:
        with Session(self.engine) as session, session.begin():
            latest = session.scalar(
                select(ModelVersionRow.version).where(ModelVersionRow.model_name == model_name)
                .order_by(ModelVersionRow.version.desc()).limit(1)
            )
            version = (latest or 0) + 1
            row = ModelVersionRow(
                model_name=model_name, version=version, service_number=new_service_number(model_name, version),
                parent_service_number=parent_service_number, algorithm=algorithm, parameters=parameters,
                feature_names=feature_names, rows_learned=rows_learned, iterations=iterations,
                data_fingerprint=fingerprint.hexdigest(), data_window_start_ms=fingerprint.window_start_ms,
                data_window_end_ms=fingerprint.window_end_ms, metrics=metrics or {}, operator=operator,
                started_at=started_at, finished_at=dt.datetime.now(dt.UTC), checkpoint=checkpoint,
            )
            session.add(row)
            session.flush()
            return _version(row)

    def record_deployment(self, service_number: str, *, operator: str, target: str, result: str = "deployed") -> None:
        with Session(self.engine) as session, session.begin():
            session.add(DeploymentRow(service_number=service_number, deployed_at=dt.datetime.now(dt.UTC),
                                      operator=operator, target=target, result=result))

    def latest(self, model_name: str) -> tuple[ModelVersion, bytes | None] | None:
        with Session(self.engine) as session:
            row = session.scalar(
                select(ModelVersionRow).where(ModelVersionRow.model_name == model_name)
                .order_by(ModelVersionRow.version.desc()).limit(1)
            )
            return (_version(row), row.checkpoint) if row else None

    def lineage(self, model_name: str) -> list[ModelVersion]:
        with Session(self.engine) as session:
            rows = session.scalars(
                select(ModelVersionRow).where(ModelVersionRow.model_name == model_name).order_by(ModelVersionRow.version)
            )
            return [_version(row) for row in rows]

    def deployments(self, service_number: str) -> list[tuple[str, str, str]]:
        with Session(self.engine) as session:
            rows = session.scalars(select(DeploymentRow).where(DeploymentRow.service_number == service_number))
            return [(row.operator, row.target, row.result) for row in rows]

    def details(self, model_name: str | None = None) -> list[VersionDetails]:
        """Every version (of one model, or of all), by model name and version, with its deployments."""
        statement = select(ModelVersionRow).order_by(ModelVersionRow.model_name, ModelVersionRow.version)
        if model_name is not None:
            statement = statement.where(ModelVersionRow.model_name == model_name)
        with Session(self.engine) as session:
            rows = list(session.scalars(statement))
            deployments: dict[str, list[Deployment]] = {}
            for deployed in session.scalars(select(DeploymentRow).order_by(DeploymentRow.id)):
                deployments.setdefault(deployed.service_number, []).append(
                    Deployment(deployed.deployed_at, deployed.operator, deployed.target, deployed.result))
            return [VersionDetails(
                row.model_name, row.version, row.service_number, row.parent_service_number, row.algorithm,
                dict(row.parameters), list(row.feature_names), row.rows_learned, row.iterations, row.data_fingerprint,
                row.data_window_start_ms, row.data_window_end_ms, dict(row.metrics), row.operator, row.started_at,
                row.finished_at, tuple(deployments.get(row.service_number, ()))) for row in rows]

    def close(self) -> None:
        self.engine.dispose()


def _version(row: ModelVersionRow) -> ModelVersion:
    return ModelVersion(row.model_name, row.version, row.service_number, row.parent_service_number,
                        row.rows_learned, row.data_fingerprint, dict(row.parameters))
