"""The one Avro codec: Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro body).

Schema Registry-aware consumers read our topics as they are, and a reader can tell schema
versions apart by the id. Ids come from a Confluent-compatible schema registry when
`SCHEMA_REGISTRY_URL` is set, else from schemas/manifest.json, which records every released
version of every schema (frozen copies under schemas/history/). Each schema is parsed once.

Decoding resolves the writer's version (by id) against the current reader schema, so old
messages stay readable after a backward-compatible change. Encoding is fastavro's, except where
a service hands the codec a byte-identical hand-written writer for its hottest message
(`fast_writers`: scoring's CustomerScores, services/scoring/avro_writer.py).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import struct
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import fastavro
from fastavro.schema import to_parsing_canonical_form

from services.core.errors import ConfigError, SchemaError, UnreachableError
from services.core.records import from_record, to_record

log = logging.getLogger(__name__)
MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")
MANIFEST_NAME = "manifest.json"
HISTORY_DIR_NAME = "history"
M = TypeVar("M")
FastWriters = dict[type[Any], tuple[str, Callable[[Any], bytes]]]


def schema_fingerprint(schema: dict[str, Any]) -> str:
    """SHA-256 of the Avro parsing canonical form: equal for schemas that read and write alike."""
    return hashlib.sha256(to_parsing_canonical_form(fastavro.parse_schema(schema, _force=True)).encode()).hexdigest()


@dataclass(frozen=True)
class SchemaVersion:
    name: str
    version: int
    schema_id: int
    schema: dict[str, Any]
    parsed: Any


class SchemaRegistryClient:
    """Minimal client for the Confluent Schema Registry REST API (register, fetch by id)."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # nosec B310  # the operator's schema registry URL
                result: dict[str, Any] = json.loads(response.read())
                return result
        except (urllib.error.URLError, OSError) as exc:
            raise UnreachableError(f"schema registry {self.url} cannot be reached: {exc}") from exc

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        return int(self._call("POST", f"/subjects/{subject}/versions", {"schema": json.dumps(schema)})["id"])

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self._call("GET", f"/schemas/ids/{schema_id}")["schema"])
        return result


class SchemaStore:
    """Every schema in schemas/, parsed once, with its released versions and their ids."""

    def __init__(self, schema_dir: Path, registry: SchemaRegistryClient | None = None) -> None:
        self.schema_dir = schema_dir
        self.registry = registry
        self.current: dict[str, SchemaVersion] = {}
        self.by_id: dict[int, SchemaVersion] = {}
        self._load()

    def _load(self) -> None:
        manifest_path = self.schema_dir / MANIFEST_NAME
        if not manifest_path.exists():
            raise ConfigError(f"schema manifest {manifest_path} is missing")
        manifest = json.loads(manifest_path.read_text())
        for name, entry in manifest["schemas"].items():
            for released in entry["versions"]:
                history_file = self.schema_dir / HISTORY_DIR_NAME / name / f"v{released['version']}.avsc"
                schema = json.loads(history_file.read_text())
                self._add(SchemaVersion(name, released["version"], released["id"], schema, _parse(schema)))
            current_schema = json.loads((self.schema_dir / entry["file"]).read_text())
            latest = max(entry["versions"], key=lambda released: released["version"])
            if schema_fingerprint(current_schema) != latest["fingerprint"]:
                raise ConfigError(
                    f"{entry['file']} differs from its latest released version v{latest['version']}: "
                    "run `cipherstream schemas release` to release it as a new version"
                )
            schema_id = self.registry.register(name, current_schema) if self.registry else latest["id"]
            version = SchemaVersion(name, latest["version"], schema_id, current_schema, _parse(current_schema))
            self.current[name] = version
            self.by_id[schema_id] = version

    def _add(self, version: SchemaVersion) -> None:
        self.by_id[version.schema_id] = version

    def writer_version(self, name: str) -> SchemaVersion:
        try:
            return self.current[name]
        except KeyError as exc:
            raise SchemaError(f"no schema named {name}") from exc

    def version_by_id(self, schema_id: int) -> SchemaVersion:
        version = self.by_id.get(schema_id)
        if version is None and self.registry is not None:
            schema = self.registry.schema_by_id(schema_id)
            version = SchemaVersion(str(schema.get("name")), 0, schema_id, schema, _parse(schema))
            self.by_id[schema_id] = version
        if version is None:
            raise SchemaError(f"unknown schema id {schema_id}", reason="unknown_schema_id")
        return version


def _parse(schema: dict[str, Any]) -> Any:
    # _force: every file is parsed on its own, so named types may repeat across files.
    return fastavro.parse_schema(schema, _force=True)


class AvroCodec:
    """Encode messages to, and decode them from, the Confluent wire format.

    >>> from services.core.config import REPO_ROOT
    >>> from services.core.dead_letter import DeadLetter
    >>> codec = AvroCodec(SchemaStore(REPO_ROOT / "schemas"))
    >>> message = DeadLetter("t", 0, 1, None, b"x", "bad", "ValueError", "d", "ingest", 5)
    >>> codec.decode(codec.encode(message), DeadLetter) == message
    True
    """

    def __init__(self, store: SchemaStore, fast_writers: FastWriters | None = None) -> None:
        """`fast_writers`: message class -> (fingerprint of the schema it was written for, writer);
        one whose schema has changed since is not used."""
        self.store = store
        self._fast_writers: dict[type[Any], Callable[[Any], bytes]] = {}
        for cls, (fingerprint, writer) in (fast_writers or {}).items():
            if schema_fingerprint(store.writer_version(cls.SCHEMA).schema) == fingerprint:
                self._fast_writers[cls] = writer
            else:
                log.warning("schema changed since its hand-written writer was; using fastavro", extra={"schema": cls.SCHEMA})

    def encode(self, message: Any) -> bytes:
        version = self.store.writer_version(type(message).SCHEMA)
        header = HEADER.pack(MAGIC_BYTE, version.schema_id)
        fast_writer = self._fast_writers.get(type(message))
        try:
            if fast_writer is not None:
                return header + fast_writer(message)
            buffer = io.BytesIO()
            buffer.write(header)
            fastavro.schemaless_writer(buffer, version.parsed, to_record(message))
            return buffer.getvalue()
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, struct.error) as exc:
            raise SchemaError(f"cannot encode {type(message).__name__}: {exc}") from exc

    def decode(self, data: bytes | None, message_type: type[M]) -> M:
        """Decode bytes written under any released version into the current message class."""
        if not data or len(data) < HEADER.size:
            raise SchemaError("message too short for the wire format header", reason="truncated")
        magic, schema_id = HEADER.unpack_from(data)
        if magic != MAGIC_BYTE:
            raise SchemaError(f"magic byte {magic} is not {MAGIC_BYTE}: not Confluent wire format", reason="bad_magic")
        writer = self.store.version_by_id(schema_id)
        reader = self.store.writer_version(message_type.SCHEMA)  # type: ignore[attr-defined]
        if writer.name != reader.name:
            raise SchemaError(f"schema id {schema_id} is {writer.name}, expected {reader.name}", reason="wrong_schema")
        body = io.BytesIO(data)
        body.seek(HEADER.size)
        try:
            record = fastavro.schemaless_reader(body, writer.parsed, reader.parsed)
        except Exception as exc:  # fastavro raises many types on corrupt input; all mean "bad bytes"
            raise SchemaError(f"cannot decode {reader.name} (schema id {schema_id}): {exc!r}", reason="corrupt") from exc
        if body.tell() != len(data):
            raise SchemaError(f"{len(data) - body.tell()} trailing bytes after the record", reason="corrupt")
        try:
            return from_record(message_type, record)
        except TypeError as exc:
            raise SchemaError(f"record does not fit {message_type.__name__}: {exc}", reason="wrong_schema") from exc
