"""Schema evolution: a change that breaks backward compatibility fails here, before it ships."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import fastavro
import pytest
from fastavro.utils import generate_many

from services.core.avro import AvroCodec, SchemaStore, schema_fingerprint
from services.core.config import REPO_ROOT
from services.core.errors import ConfigError
from services.core.schema_release import (
    compatibility_problems,
    load_manifest,
    release_changed_schemas,
    released_versions,
    schema_files,
)
from services.protocol.stream_messages import Suppression

SCHEMA_DIR = REPO_ROOT / "schemas"


def current_schemas() -> list[tuple[str, dict]]:
    manifest = load_manifest(SCHEMA_DIR)
    return [(name, json.loads((SCHEMA_DIR / entry["file"]).read_text())) for name, entry in manifest["schemas"].items()]


@pytest.mark.parametrize("name, schema", current_schemas(), ids=lambda value: value if isinstance(value, str) else "")
def test_current_schema_reads_every_released_version(name: str, schema: dict) -> None:
    for version, old in enumerate(released_versions(SCHEMA_DIR, name, load_manifest(SCHEMA_DIR)), start=1):
        assert compatibility_problems(schema, old) == [], f"{name} breaks v{version}"


@pytest.mark.parametrize("name, schema", current_schemas(), ids=lambda value: value if isinstance(value, str) else "")
def test_every_schema_file_is_released(name: str, schema: dict) -> None:
    latest = load_manifest(SCHEMA_DIR)["schemas"][name]["versions"][-1]
    assert schema_fingerprint(schema) == latest["fingerprint"], f"run `cipherstream schemas release` for {name}"


def test_every_avsc_file_is_in_the_manifest() -> None:
    listed = {entry["file"] for entry in load_manifest(SCHEMA_DIR)["schemas"].values()}
    assert {path.relative_to(SCHEMA_DIR).as_posix() for path in schema_files(SCHEMA_DIR)} == listed


@pytest.fixture
def schema_copy(tmp_path: Path) -> Path:
    shutil.copytree(SCHEMA_DIR, tmp_path / "schemas")
    return tmp_path / "schemas"


def _edit(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema))


def test_adding_a_field_without_default_is_refused(schema_copy: Path) -> None:
    _edit(schema_copy / "suppression.avsc", lambda schema: schema["fields"].append({"name": "severity", "type": "int"}))
    with pytest.raises(ValueError, match="severity"):
        release_changed_schemas(schema_copy)


def test_removing_an_enum_symbol_is_refused(schema_copy: Path) -> None:
    def drop_symbol(schema: dict) -> None:
        field = next(field for field in schema["fields"] if field["name"] == "outcome")
        field["type"]["symbols"] = [symbol for symbol in field["type"]["symbols"] if symbol != "converted"]
    _edit(schema_copy / "response.avsc", drop_symbol)
    with pytest.raises(ValueError, match=r"response\.avsc"):
        release_changed_schemas(schema_copy)


def test_compatible_change_becomes_a_new_version_and_old_messages_still_decode(schema_copy: Path) -> None:
    old_codec = AvroCodec(SchemaStore(schema_copy))
    old_bytes = old_codec.encode(Suppression("e", "C", None, None, "no_consent", "d", 5))
    _edit(schema_copy / "suppression.avsc",
          lambda schema: schema["fields"].append({"name": "severity", "type": "int", "default": 0}))
    with pytest.raises(ConfigError, match="release"):
        SchemaStore(schema_copy)  # an unreleased change stops a service at start
    assert release_changed_schemas(schema_copy) == {"cipherstream.Suppression": 2}
    store = SchemaStore(schema_copy)
    assert store.current["cipherstream.Suppression"].schema_id != old_codec.store.current["cipherstream.Suppression"].schema_id
    record = fastavro.schemaless_reader(
        io.BytesIO(old_bytes[5:]), store.version_by_id(int.from_bytes(old_bytes[1:5], "big")).parsed,
        store.current["cipherstream.Suppression"].parsed,
    )
    assert record["severity"] == 0 and record["reason"] == "no_consent"


def test_generated_records_of_each_schema_are_valid() -> None:
    for _, schema in current_schemas():
        parsed = fastavro.parse_schema(schema, _force=True)
        for record in generate_many(schema, 5):
            assert fastavro.validate(record, parsed)


def test_every_released_version_has_its_own_schema_id() -> None:
    """Messages name their schema by id: two versions under one id would decode as each other
    (two branches that each release a schema take the same next id; re-release one after merging)."""
    released = [(version["id"], name) for name, entry in load_manifest(SCHEMA_DIR)["schemas"].items()
                for version in entry["versions"]]
    ids = [schema_id for schema_id, _ in released]
    assert sorted(set(ids)) == sorted(ids), sorted(entry for entry in released if ids.count(entry[0]) > 1)
