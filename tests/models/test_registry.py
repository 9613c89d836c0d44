"""The model registry keeps lineage, checkpoints and unique service numbers on SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt
import uuid

import pytest

from services.models.registry import DataFingerprint, ModelRegistry, NewVersion, StaleVersionError


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


def _new(name: str, parent: str | None, checkpoint: bytes = b"state") -> NewVersion:
    return NewVersion(name, "logreg", {}, ["a"], 1, 1, DataFingerprint(), "tester", dt.datetime.now(dt.UTC),
                      checkpoint=checkpoint, parent_service_number=parent)


def test_a_version_whose_parent_is_no_longer_the_latest_is_refused(database_url: str) -> None:
    registry = ModelRegistry(database_url)
    name = f"propensity.cas_{uuid.uuid4().hex[:6]}"
    first = registry.register(model_name=name, algorithm="a", parameters={}, feature_names=[], rows_learned=0,
                              iterations=0, fingerprint=DataFingerprint(), operator="t",
                              started_at=dt.datetime.now(dt.UTC), only_if_latest=True)
    with pytest.raises(StaleVersionError):  # a second first version: someone registered one already
        registry.register(model_name=name, algorithm="a", parameters={}, feature_names=[], rows_learned=0,
                          iterations=0, fingerprint=DataFingerprint(), operator="t",
                          started_at=dt.datetime.now(dt.UTC), only_if_latest=True)
    second = _register(registry, name, parent=first.service_number)
    with pytest.raises(StaleVersionError):  # a stale writer still holding the first version
        registry.register(model_name=name, algorithm="a", parameters={}, feature_names=[], rows_learned=0,
                          iterations=0, fingerprint=DataFingerprint(), operator="t", started_at=dt.datetime.now(dt.UTC),
                          parent_service_number=first.service_number, only_if_latest=True)
    with pytest.raises(StaleVersionError):  # the database refuses a fork even without the check
        registry.register(model_name=name, algorithm="a", parameters={}, feature_names=[], rows_learned=0,
                          iterations=0, fingerprint=DataFingerprint(), operator="t", started_at=dt.datetime.now(dt.UTC),
                          parent_service_number=first.service_number)
    assert [v.service_number for v in registry.lineage(name)] == [first.service_number, second.service_number]  # type: ignore[attr-defined]
    registry.close()


def test_a_checkpoint_moves_the_position_with_its_versions_or_not_at_all(database_url: str) -> None:
    registry = ModelRegistry(database_url)
    learner, name = f"scoring:{uuid.uuid4().hex[:6]}", f"propensity.pos_{uuid.uuid4().hex[:6]}"
    assert registry.position(learner) is None
    position, [v1] = registry.checkpoint(learner, 0, {0: 10, 1: 4}, {}, [_new(name, None)])
    assert position == registry.position(learner) and position.generation == 1
    assert position.offsets == {0: 10, 1: 4} and position.versions == {name: v1.service_number}
    position, [v2] = registry.checkpoint(learner, 1, {0: 25, 1: 4}, {}, [_new(name, v1.service_number, b"later")])
    # A stale learner (still at generation 1, or still holding v1) is refused, and registers nothing.
    with pytest.raises(StaleVersionError):
        registry.checkpoint(learner, 1, {0: 30, 1: 4}, {}, [_new(name, v2.service_number)])
    with pytest.raises(StaleVersionError):
        registry.checkpoint(learner, 2, {0: 30, 1: 4}, {}, [_new(name, v1.service_number)])
    with pytest.raises(StaleVersionError):  # a second learner starting from nothing
        registry.checkpoint(learner, 0, {0: 1}, {}, [])
    assert registry.position(learner) == position and position.offsets == {0: 25, 1: 4}
    assert [v.service_number for v in registry.lineage(name)] == [v1.service_number, v2.service_number]
    # Only the position moves when nothing was learned (the models kept as they are).
    moved, registered = registry.checkpoint(learner, 2, {0: 40, 1: 9}, {name: v2.service_number}, [])
    assert registered == [] and moved.generation == 3 and moved.versions == {name: v2.service_number}
    assert registry.version_of(v2.service_number)[1] == b"later"  # type: ignore[index]
    registry.close()
