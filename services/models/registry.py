"""The model registry: every model version with its lineage, checkpoint and unique service number.

Each version records what the regulator's traceability items ask: a SHA-256 fingerprint of
the data it learned from, row and feature counts, the time window of that data, parameters,
iterations, operator, start and end timestamps, its parent version, and a unique service
number (the model's watermark) that every score carries. Deployments are recorded too.
SQLite by default, PostgreSQL in production (DATABASE_URL); the schema is created on first use.

One history per model: a version registered with `only_if_latest` is refused (`StaleVersionError`)
unless its parent is still the model's latest version, and the database itself refuses two versions
with one number or one parent. An online learner keeps its position in its input stream beside the
versions it learned (`learner_positions`), written in the same transaction as those versions
(`checkpoint`): a learner restored from its position has learned exactly the records before it.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, LargeBinary, String, create_engine, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from services.core.errors import CipherstreamError
from services.core.sql import Base, ensure_tables

log = logging.getLogger(__name__)


class StaleVersionError(CipherstreamError):
    """A version whose parent is no longer the model's latest (or a learner position written since
    it was read): another writer got there first. The stale writer reloads."""


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

    # One history per model: no version number twice, no parent with two children (a fork).
    __table_args__ = (
        Index("ux_model_versions_number", "model_name", "version", unique=True),
        Index("ux_model_versions_parent", "parent_service_number", unique=True),
    )


class LearnerPositionRow(Base):
    """Where an online learner is in its input: the next offset per partition, and the versions of
    its models that hold exactly the records before it. `generation` counts the writes."""

    __tablename__ = "learner_positions"

    learner: Mapped[str] = mapped_column(String(256), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer)
    offsets: Mapped[dict[str, int]] = mapped_column(JSON)
    versions: Mapped[dict[str, str]] = mapped_column(JSON)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class DeploymentRow(Base):
    __tablename__ = "model_deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_number: Mapped[str] = mapped_column(ForeignKey("model_versions.service_number"), index=True)
    deployed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    operator: Mapped[str] = mapped_column(String(128))
    target: Mapped[str] = mapped_column(String(128))
    result: Mapped[str] = mapped_column(String(32))


@dataclass(frozen=True)
class LearnerPosition:
    """An online learner's saved position (what `ModelRegistry.checkpoint` wrote last)."""

    learner: str
    generation: int
    offsets: dict[int, int]  # partition -> the next offset to learn from
    versions: dict[str, str]  # model name -> service number of the version that holds what came before


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
    algorithm: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How a score names the version that made it."""
        return f"{self.model_name}@v{self.version}"


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
        self._widen(at_ms)

    def update_bytes(self, rows: bytes, at_ms: int | None = None) -> None:
        """A batch of rows at once, as bytes (a float64 matrix): for models that learn from every
        event, where one JSON document per row would cost more than the learning."""
        self._hash.update(rows)
        self._widen(at_ms)

    def _widen(self, at_ms: int | None) -> None:
        if at_ms is not None:
            self.window_start_ms = at_ms if self.window_start_ms is None else min(self.window_start_ms, at_ms)
            self.window_end_ms = at_ms if self.window_end_ms is None else max(self.window_end_ms, at_ms)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


@dataclass(frozen=True)
class NewVersion:
    """Everything a version records, for registering it."""

    model_name: str
    algorithm: str
    parameters: dict[str, Any]
    feature_names: list[str]
    rows_learned: int
    iterations: int
    fingerprint: DataFingerprint
    operator: str
    started_at: dt.datetime
    metrics: dict[str, Any] | None = None
    checkpoint: bytes | None = None
    parent_service_number: str | None = None


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
        ensure_tables(self.engine, [Base.metadata.tables[table] for table in (
            ModelVersionRow.__tablename__, DeploymentRow.__tablename__, LearnerPositionRow.__tablename__)])
        self._ensure_lineage_indexes()

    def _ensure_lineage_indexes(self) -> None:
        """A table made before the indexes existed gets them now, unless its lineage already forked
        (versions registered by every scoring replica at start, before the compare-and-set): then
        the compare-and-set alone guards new versions."""
        for index in Base.metadata.tables[ModelVersionRow.__tablename__].indexes:
            try:
                index.create(self.engine, checkfirst=True)
            except DatabaseError as error:
                log.warning("model lineage index not created: the registry already holds a fork",
                            extra={"index": index.name, "error": type(error).__name__})

    def register(
        self, *, model_name: str, algorithm: str, parameters: dict[str, Any], feature_names: list[str],
        rows_learned: int, iterations: int, fingerprint: DataFingerprint, operator: str, started_at: dt.datetime,
        metrics: dict[str, Any] | None = None, checkpoint: bytes | None = None, parent_service_number: str | None = None,
        only_if_latest: bool = False,
    ) -> ModelVersion:
        """Register a version. With `only_if_latest`, only if `parent_service_number` is still the
        model's latest version (None: the model has none yet); else StaleVersionError."""
        new = NewVersion(model_name, algorithm, parameters, feature_names, rows_learned, iterations, fingerprint,
                         operator, started_at, metrics, checkpoint, parent_service_number)
        try:
            with Session(self.engine) as session, session.begin():
                return self._add_version(session, new, only_if_latest)
        except IntegrityError as error:
            raise StaleVersionError(f"{model_name}: another version was registered at the same moment") from error

    def _add_version(self, session: Session, new: NewVersion, only_if_latest: bool) -> ModelVersion:
        latest = session.execute(
            select(ModelVersionRow.version, ModelVersionRow.service_number)
            .where(ModelVersionRow.model_name == new.model_name).order_by(ModelVersionRow.version.desc()).limit(1)
        ).first()
        if only_if_latest and (latest[1] if latest else None) != new.parent_service_number:
            raise StaleVersionError(f"{new.model_name}: parent {new.parent_service_number} is not the latest version "
                                    f"({latest[1] if latest else 'none'})")
        version = (latest[0] if latest else 0) + 1
        fingerprint = new.fingerprint
        row = ModelVersionRow(
            model_name=new.model_name, version=version, service_number=new_service_number(new.model_name, version),
            parent_service_number=new.parent_service_number, algorithm=new.algorithm, parameters=new.parameters,
            feature_names=new.feature_names, rows_learned=new.rows_learned, iterations=new.iterations,
            data_fingerprint=fingerprint.hexdigest(), data_window_start_ms=fingerprint.window_start_ms,
            data_window_end_ms=fingerprint.window_end_ms, metrics=new.metrics or {}, operator=new.operator,
            started_at=new.started_at, finished_at=dt.datetime.now(dt.UTC), checkpoint=new.checkpoint,
        )
        session.add(row)
        session.flush()
        return _version(row)

    def checkpoint(self, learner: str, generation: int, offsets: Mapping[int, int], kept: Mapping[str, str],
                   versions: Sequence[NewVersion]) -> tuple[LearnerPosition, list[ModelVersion]]:
        """One transaction: register `versions` (each only if its parent is still the latest) and
        move the learner's position to `offsets`, only if it is still at `generation` (0: none yet).
        `kept`: model -> service number of the models that learned nothing new. Refused as a whole
        (StaleVersionError) if another writer moved a version or the position first."""
        try:
            with Session(self.engine) as session, session.begin():
                registered = [self._add_version(session, new, only_if_latest=True) for new in versions]
                names = {**kept, **{version.model_name: version.service_number for version in registered}}
                values = {"generation": generation + 1, "offsets": {str(p): o for p, o in sorted(offsets.items())},
                          "versions": names, "updated_at": dt.datetime.now(dt.UTC)}
                if generation == 0:
                    session.add(LearnerPositionRow(learner=learner, **values))
                    session.flush()
                else:
                    moved = session.execute(update(LearnerPositionRow).where(
                        LearnerPositionRow.learner == learner, LearnerPositionRow.generation == generation).values(**values))
                    if moved.rowcount != 1:  # type: ignore[attr-defined]
                        raise StaleVersionError(f"learner {learner} moved past generation {generation}")
        except IntegrityError as error:
            raise StaleVersionError(f"learner {learner}: another writer checkpointed at the same moment") from error
        return LearnerPosition(learner, generation + 1, dict(offsets), names), registered

    def position(self, learner: str) -> LearnerPosition | None:
        with Session(self.engine) as session:
            row = session.get(LearnerPositionRow, learner)
            if row is None:
                return None
            return LearnerPosition(row.learner, row.generation, {int(p): int(o) for p, o in row.offsets.items()},
                                   dict(row.versions))

    def latest_service_number(self, model_name: str) -> str | None:
        """The latest version's service number, without loading its checkpoint (to see whether it changed)."""
        with Session(self.engine) as session:
            number: str | None = session.scalar(
                select(ModelVersionRow.service_number).where(ModelVersionRow.model_name == model_name)
                .order_by(ModelVersionRow.version.desc()).limit(1))
            return number

    def version_of(self, service_number: str) -> tuple[ModelVersion, bytes | None] | None:
        with Session(self.engine) as session:
            row = session.scalar(select(ModelVersionRow).where(ModelVersionRow.service_number == service_number))
            return (_version(row), row.checkpoint) if row else None

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

    def latest_per_product(self, products: Iterable[str],
                           model_name: Callable[[str], str]) -> dict[str, tuple[ModelVersion, bytes]]:
        """Each product's latest version of `model_name(product)` and its checkpoint, where one has been trained."""
        found = {}
        for product in products:
            latest = self.latest(model_name(product))
            if latest is not None and (checkpoint := latest[1]):
                found[product] = (latest[0], checkpoint)
        return found

    def version(self, service_number: str) -> ModelVersion | None:
        """The version a score's service number names, or None if no such version was registered."""
        with Session(self.engine) as session:
            row = session.scalar(select(ModelVersionRow).where(ModelVersionRow.service_number == service_number))
            return _version(row) if row else None

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
                        row.rows_learned, row.data_fingerprint, dict(row.parameters), row.algorithm, dict(row.metrics))
