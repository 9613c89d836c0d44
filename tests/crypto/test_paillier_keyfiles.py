"""Key files: round trip, private mode, rotation keeps old keys, corrupt files are clear errors."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from services.core.errors import ConfigError
from services.crypto.paillier import (
    FastEncryptor,
    KeyRing,
    PaillierPrivateKey,
    generate_keypair,
    load_private_key,
    load_public_key,
    save_private_key,
    save_public_key,
)

PUBLIC, PRIVATE = generate_keypair(2048)


def test_key_files_round_trip_and_the_private_one_is_never_readable_by_others(tmp_path: Path) -> None:
    save_private_key(tmp_path / "bank.key", PRIVATE)
    save_public_key(tmp_path / "bank.pub", PUBLIC)
    assert os.stat(tmp_path / "bank.key").st_mode & 0o777 == 0o600
    assert load_private_key(tmp_path / "bank.key") == PRIVATE
    assert load_public_key(tmp_path / "bank.pub") == PUBLIC
    save_private_key(tmp_path / "bank.key", PRIVATE)  # overwriting is atomic and leaves no temp files
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bank.key", "bank.pub"]


def test_rotation_switches_current_and_old_keys_still_decrypt(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "ring")
    first = ring.rotate()
    ciphertext = FastEncryptor(ring.public(first)).encrypt_raw(42)
    second = ring.rotate()
    assert ring.current()[0] == second != first
    assert ring.key_ids() == [first, second]
    assert KeyRing(tmp_path / "ring").get(first).decrypt_raw(ciphertext) == 42  # a fresh ring reads the files
    assert ring.current()[1].public_key == ring.public(second) != ring.public(first)


@pytest.mark.parametrize(
    "content, complaint",
    [
        ("{not json", "not a usable paillier-private"),
        (json.dumps({"kind": "paillier-public", "n": "0x1"}), "holds 'paillier-public'"),
        (json.dumps([1, 2]), "holds 'list'"),
        (json.dumps({"kind": "paillier-private", "n": hex(PUBLIC.n), "p": hex(PRIVATE.p)}), "KeyError"),
        (json.dumps({"kind": "paillier-private", "n": hex(PUBLIC.n), "p": "zz", "q": "0x3"}), "ValueError"),
        (json.dumps({"kind": "paillier-private", "n": hex(PUBLIC.n), "p": hex(PRIVATE.p), "q": hex(PRIVATE.p)}),
         "does not match"),
        (json.dumps({"kind": "paillier-private", "n": hex(PUBLIC.n * 3), "p": hex(PUBLIC.n), "q": "0x3"}),
         "not both prime"),
        (json.dumps({"kind": "paillier-private", "version": 9, "n": "0x1", "p": "0x1", "q": "0x1"}), "version 9"),
    ],
)
def test_corrupt_or_foreign_key_files_are_config_errors(tmp_path: Path, content: str, complaint: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(content)
    with pytest.raises(ConfigError, match=complaint):
        load_private_key(path)


def test_missing_files_unknown_ids_and_path_like_ids_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_public_key(tmp_path / "absent.pub")
    ring = KeyRing(tmp_path / "ring")
    with pytest.raises(ConfigError, match="rotate first"):
        ring.current()
    with pytest.raises(ConfigError, match="no private key"):
        ring.get("k0001")
    with pytest.raises(ConfigError, match="not a key id"):
        ring.get("../bank")
    (tmp_path / "ring" / "current").write_text("../../etc/passwd")
    with pytest.raises(ConfigError, match="not a key id"):
        ring.current()


def test_a_private_key_must_match_its_public_key() -> None:
    with pytest.raises(ConfigError, match="does not match"):
        PaillierPrivateKey(PUBLIC, PRIVATE.p, PRIVATE.q + 2)
