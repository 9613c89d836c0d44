"""The model registry keeps lineage, checkpoints and unique service numbers on SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt
import uuid

from services.models.registry import DataFingerprint, ModelRegistry


def _register(registry: ModelRegistry, name: str, parent: str | None = None, checkpoint: bytes = b"state") -> object:
    fingerprint = DataFingerprint()
    fingerprint.update([1.0, 2.0], True, at_ms=1_000)
    fingerprint.update([0.5, 0.1], False, at_ms=5_000)
    return registry.register(
        model_name=name, algorithm="logreg", parameters={"learning_rate": 0.05}, feature_names=["a", "b"],
        rows_learned=2, iterations=2, fingerprint=fingerprint, operator="tester",
        started_at=dt.datetime.now(dt.UTC), checkpoint=checkpoint, parent_service_number=parent,
    )


def test_versions_form_a_lineage_with_unique_service_numbers(database_url: str) -> None:
    registry = ModelRegistry(database_url)
    name = f"propensity.test_{uuid.uuid4().hex[:6]}"
    first = _register(registry, name)
    second = _register(registry, name, parent=first.service_number, checkpoint=b"newer")  # type: ignore[attr-defined]
    lineage = registry.lineage(name)
    assert [version.version for version in lineage] == [1, 2]
    assert lineage[1].parent_service_number == lineage[0].service_number
    assert lineage[0].service_number != lineage[1].service_number
    latest, checkpoint = registry.latest(name)  # type: ignore[misc]
    assert latest.service_number == second.service_number and checkpoint == b"newer"  # type: ignore[attr-defined]
    registry.close()


def test_data_fingerprint_and_window_are_recorded(database_url: str) -> None:
    registry = ModelRegistry(database_url)
    name = f"propensity.fp_{uuid.uuid4().hex[:6]}"
    _register(registry, name)
    _register(registry, f"{name}_twin")
    [version] = registry.lineage(name)
    [twin] = registry.lineage(f"{name}_twin")
    assert len(version.data_fingerprint) == 64 and version.data_fingerprint == twin.data_fingerprint
    registry.close()


def test_deployments_are_recorded_with_operator_and_target(database_url: str) -> None:
    registry = ModelRegistry(database_url)
    version = _register(registry, f"propensity.dep_{uuid.uuid4().hex[:6]}")
    registry.record_deployment(version.service_number, operator="ops-alice", target="scoring-0")  # type: ignore[attr-defined]
    assert registry.deployments(version.service_number) == [("ops-alice", "scoring-0", "deployed")]  # type: ignore[attr-defined]
    registry.close()


def test_fingerprint_changes_with_the_data() -> None:
    one, other = DataFingerprint(), DataFingerprint()
    one.update([1.0], True)
    other.update([1.0], False)
    assert one.hexdigest() != other.hexdigest()
