"""Paillier key files (JSON) and a key ring with rotation.

A private key file is written with mode 0600 from its first byte (never readable by others, not
even for a moment) and replaced atomically, so a crash leaves the old file or the new one, never
half of one. Reading checks what can be checked cheaply: the kind, the hex numbers, p * q = n and
that p and q are probable primes, so a corrupt or foreign file is a ConfigError naming the file,
never a wrong key.

A `KeyRing` is one directory: `<id>.key` (private), `<id>.pub` and `current`, the id new data is
encrypted under. `rotate` adds a key and switches `current` to it; old keys stay, to decrypt what
was encrypted under them, until an operator deletes their files.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gmpy2

from services.core.errors import ConfigError
from services.crypto.paillier_keys import DEFAULT_KEY_BITS, PaillierPrivateKey, PaillierPublicKey, generate_keypair

PUBLIC_KIND = "paillier-public"
PRIVATE_KIND = "paillier-private"
FORMAT_VERSION = 1
Parsed = TypeVar("Parsed")
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def save_public_key(path: Path, key: PaillierPublicKey) -> None:
    _write_atomically(Path(path), {"kind": PUBLIC_KIND, "version": FORMAT_VERSION, "bits": key.bits,
                                   "n": hex(key.n)}, mode=0o644)


def load_public_key(path: Path) -> PaillierPublicKey:
    document = _read_key_file(Path(path), PUBLIC_KIND)
    return _parse(Path(path), PUBLIC_KIND, lambda: PaillierPublicKey(_hex(document, "n")))


def save_private_key(path: Path, key: PaillierPrivateKey) -> None:
    _write_atomically(Path(path), {"kind": PRIVATE_KIND, "version": FORMAT_VERSION, "bits": key.public_key.bits,
                                   "n": hex(key.public_key.n), "p": hex(key.p), "q": hex(key.q)}, mode=0o600)


def load_private_key(path: Path) -> PaillierPrivateKey:
    """The private key in `path`; ConfigError if the file is missing, corrupt or not a private key.

    >>> import tempfile
    >>> bad = Path(tempfile.mkdtemp()) / "bad.key"
    >>> _ = bad.write_text('{"kind": "paillier-private", "n": "0x23", "p": "0x5", "q": "0x8"}')
    >>> load_private_key(bad)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    services.core.errors.ConfigError: .../bad.key is not a usable paillier-private key file: ...
    """
    path = Path(path)
    document = _read_key_file(path, PRIVATE_KIND)

    def build() -> PaillierPrivateKey:
        p, q = _hex(document, "p"), _hex(document, "q")
        if not (gmpy2.is_prime(p, 25) and gmpy2.is_prime(q, 25)):
            raise ValueError("p and q are not both prime")
        return PaillierPrivateKey(PaillierPublicKey(_hex(document, "n")), p, q)

    return _parse(path, PRIVATE_KIND, build)


def _hex(document: dict[str, Any], name: str) -> int:
    value = document[name]
    if not isinstance(value, str):
        raise TypeError(f"{name} is not a hex string")
    return int(value, 16)


def _parse(path: Path, kind: str, build: Callable[[], Parsed]) -> Parsed:
    try:
        return build()
    except (KeyError, TypeError, ValueError, ConfigError) as error:
        raise ConfigError(f"{path} is not a usable {kind} key file: {error!r}") from error


def _read_key_file(path: Path, kind: str) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"{path} is not a usable {kind} key file: {error}") from error
    if not isinstance(document, dict) or document.get("kind") != kind:
        found = document.get("kind") if isinstance(document, dict) else type(document).__name__
        raise ConfigError(f"{path} is not a usable {kind} key file: it holds {found!r}")
    if document.get("version", FORMAT_VERSION) != FORMAT_VERSION:
        raise ConfigError(f"{path} is not a usable {kind} key file: format version {document.get('version')!r}")
    return document


def _write_atomically(path: Path, document: dict[str, Any], mode: int) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "w") as out:
            out.write(json.dumps(document))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class KeyRing:
    """Key files in one directory, with rotation: new data under `current`, old keys kept.

    >>> import tempfile
    >>> ring = KeyRing(Path(tempfile.mkdtemp()))
    >>> ring.current()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    services.core.errors.ConfigError: no Paillier key in ...: rotate first
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._loaded: dict[str, PaillierPrivateKey] = {}

    def current_id(self) -> str:
        try:
            key_id = (self.directory / "current").read_text().strip()
        except FileNotFoundError as error:
            raise ConfigError(f"no Paillier key in {self.directory}: rotate first") from error
        return self._checked(key_id)

    def current(self) -> tuple[str, PaillierPrivateKey]:
        key_id = self.current_id()
        return key_id, self.get(key_id)

    def rotate(self, bits: int = DEFAULT_KEY_BITS) -> str:
        """Make a new key, make it current, keep the old ones; returns the new key's id."""
        _, private = generate_keypair(bits)
        key_id = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}-{secrets.token_hex(4)}"
        save_private_key(self.directory / f"{key_id}.key", private)
        save_public_key(self.directory / f"{key_id}.pub", private.public_key)
        _write_text_atomically(self.directory / "current", key_id)
        self._loaded[key_id] = private
        return key_id

    def key_ids(self) -> list[str]:
        """Every key id in the ring, oldest first."""
        return sorted(path.stem for path in self.directory.glob("*.pub") if KEY_ID_PATTERN.fullmatch(path.stem))

    def get(self, key_id: str) -> PaillierPrivateKey:
        key_id = self._checked(key_id)
        if key_id not in self._loaded:
            path = self.directory / f"{key_id}.key"
            if not path.exists():
                raise ConfigError(f"no private key {key_id!r} in {self.directory}")
            self._loaded[key_id] = load_private_key(path)
        return self._loaded[key_id]

    def public(self, key_id: str) -> PaillierPublicKey:
        key_id = self._checked(key_id)
        path = self.directory / f"{key_id}.pub"
        if not path.exists():
            raise ConfigError(f"no public key {key_id!r} in {self.directory}")
        return load_public_key(path)

    def _checked(self, key_id: str) -> str:
        # Ids become file names: refuse anything that could leave the directory.
        if not KEY_ID_PATTERN.fullmatch(key_id):
            raise ConfigError(f"{key_id!r} is not a key id")
        return key_id


def _write_text_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
