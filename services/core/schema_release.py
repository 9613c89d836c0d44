"""Releasing schema versions: a changed .avsc becomes a new version only if it stays backward compatible.

Backward compatible means: a consumer using the new schema can read every message written
under any released version (Avro schema resolution, writer = old, reader = new). We check it
two ways: a structural rule (fields added without a default break old data) and a resolution
run over generated records of each old version.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro
from fastavro.utils import generate_many

from services.core.avro import HISTORY_DIR_NAME, MANIFEST_NAME, schema_fingerprint

SAMPLES_PER_CHECK = 64


def full_name(schema: dict[str, Any]) -> str:
    return f"{schema['namespace']}.{schema['name']}" if "namespace" in schema else str(schema["name"])


def compatibility_problems(new_schema: dict[str, Any], old_schema: dict[str, Any]) -> list[str]:
    """Why data written with `old_schema` would not be readable with `new_schema` (empty: compatible).

    >>> old = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}
    >>> compatibility_problems({**old, "fields": old["fields"] + [{"name": "b", "type": "int"}]}, old)
    ["field 'b' was added without a default"]
    >>> compatibility_problems({**old, "fields": old["fields"] + [{"name": "b", "type": "int", "default": 0}]}, old)
    []
    """
    problems: list[str] = []
    old_fields = {field["name"] for field in old_schema.get("fields", [])}
    for field in new_schema.get("fields", []):
        if field["name"] not in old_fields and "default" not in field:
            problems.append(f"field {field['name']!r} was added without a default")
    if problems:
        return problems
    writer = fastavro.parse_schema(old_schema, _force=True)
    reader = fastavro.parse_schema(new_schema, _force=True)
    for record in generate_many(old_schema, SAMPLES_PER_CHECK):
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, writer, record)
        buffer.seek(0)
        try:
            fastavro.schemaless_reader(buffer, writer, reader)
        except Exception as exc:  # resolution failures come as several fastavro types
            return [f"a record written with the old version cannot be read: {exc!r}"]
    return []


def schema_files(schema_dir: Path) -> list[Path]:
    """Every current .avsc under `schema_dir` (subfolders too, such as exchange/), not the released copies."""
    return sorted(path for path in schema_dir.rglob("*.avsc")
                  if path.relative_to(schema_dir).parts[0] != HISTORY_DIR_NAME)


def load_manifest(schema_dir: Path) -> dict[str, Any]:
    path = schema_dir / MANIFEST_NAME
    manifest: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"schemas": {}}
    return manifest


def released_versions(schema_dir: Path, name: str, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    entry = manifest["schemas"].get(name, {"versions": []})
    return [
        json.loads((schema_dir / HISTORY_DIR_NAME / name / f"v{released['version']}.avsc").read_text())
        for released in entry["versions"]
    ]


def release_changed_schemas(schema_dir: Path) -> dict[str, int]:
    """Release every new or changed .avsc as its next version; refuse incompatible changes.

    Returns {schema name: released version} for what changed. Raises ValueError naming each
    incompatibility, and writes nothing in that case.
    """
    manifest = load_manifest(schema_dir)
    next_id = 1 + max(
        (released["id"] for entry in manifest["schemas"].values() for released in entry["versions"]), default=0
    )
    pending: list[tuple[str, Path, dict[str, Any], int]] = []
    problems: list[str] = []
    for path in schema_files(schema_dir):
        schema = json.loads(path.read_text())
        name = full_name(schema)
        entry = manifest["schemas"].get(name)
        if entry and entry["versions"][-1]["fingerprint"] == schema_fingerprint(schema):
            continue
        for version_number, old in enumerate(released_versions(schema_dir, name, manifest), start=1):
            problems += [f"{path.name} vs v{version_number}: {problem}" for problem in compatibility_problems(schema, old)]
        pending.append((name, path, schema, len(entry["versions"]) + 1 if entry else 1))
    if problems:
        raise ValueError("backward-incompatible schema change:\n  " + "\n  ".join(problems))
    released: dict[str, int] = {}
    for name, path, schema, version in pending:
        history = schema_dir / HISTORY_DIR_NAME / name
        history.mkdir(parents=True, exist_ok=True)
        (history / f"v{version}.avsc").write_text(json.dumps(schema, indent=2) + "\n")
        file = path.relative_to(schema_dir).as_posix()
        entry = manifest["schemas"].setdefault(name, {"file": file, "versions": []})
        entry["file"] = file
        entry["versions"].append({"version": version, "id": next_id, "fingerprint": schema_fingerprint(schema)})
        next_id += 1
        released[name] = version
    (schema_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return released
