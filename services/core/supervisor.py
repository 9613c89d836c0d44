"""Run Cipherstream services as real processes (`python -m services.<name>.app worker`) pointed
at given settings, and wait until each reports ready. Used by `cipherstream up`/`demo`, tests
and benchmarks alike."""
from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from services.core.config import Settings
from services.core.embedded.processes import ManagedProcess, free_port, start_process
from services.core.errors import UnreachableError

BANK_SERVICES: tuple[str, ...] = ("ingest", "scoring", "dispatch", "exchange", "reporting", "console")
PARTNER_SERVICES: tuple[str, ...] = ("partner",)
PARTNER_KEY_SUFFIX = "partner:"


def partner_env(settings: Settings) -> dict[str, str]:
    """The partner keeps its state apart from the bank's: on the embedded stack, under its own key prefix
    (in production, its own Redis, by REDIS_URL)."""
    return {"CIPHERSTREAM_REDIS_KEY_PREFIX": settings.redis_key_prefix + PARTNER_KEY_SUFFIX}


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a service process exactly these settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CIPHERSTREAM_")}
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "REDIS_URL": settings.redis_url.get_secret_value(),
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "CIPHERSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "CIPHERSTREAM_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "CIPHERSTREAM_DATA_DIR": str(settings.data_dir),
        "CIPHERSTREAM_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "CIPHERSTREAM_LOG_LEVEL": settings.log_level,
        "CIPHERSTREAM_CAMPAIGNS_FILE": str(settings.campaigns_file),
        "CIPHERSTREAM_QUIET_HOURS": str(settings.quiet_hours).lower(),
        "CIPHERSTREAM_MODEL_REFRESH_S": str(settings.model_refresh_s),
        "CIPHERSTREAM_LEARNER_CHECKPOINT_ROWS": str(settings.learner_checkpoint_rows),
        "CIPHERSTREAM_LEARNER_CHECKPOINT_INTERVAL_S": str(settings.learner_checkpoint_interval_s),
        "CIPHERSTREAM_ONLINE_WINDOW_ROWS": str(settings.online_window_rows),
        "CIPHERSTREAM_ONLINE_LEARNING_RATE": str(settings.online_learning_rate),
        "CIPHERSTREAM_ONLINE_REPLY_TIMEOUT_S": str(settings.online_reply_timeout_s),
        "CIPHERSTREAM_CAMPAIGN_REFRESH_S": str(settings.campaign_refresh_s),
        "CIPHERSTREAM_FETCH_MAX_WAIT_MS": str(settings.fetch_max_wait_ms),
        "CIPHERSTREAM_EXACTLY_ONCE": str(settings.exactly_once).lower(),
        "CIPHERSTREAM_CONSOLE_COOKIE_SECURE": str(settings.console_cookie_secure).lower(),
    })
    if settings.max_offers_per_customer_per_day is not None:
        env["CIPHERSTREAM_MAX_OFFERS_PER_CUSTOMER_PER_DAY"] = str(settings.max_offers_per_customer_per_day)
    if settings.exchange_bootstrap_servers:
        env["EXCHANGE_BOOTSTRAP_SERVERS"] = settings.exchange_bootstrap_servers
    return env


def wait_ready(port: int, managed: ManagedProcess, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if managed.process.poll() is not None:
            raise UnreachableError(f"{managed.name} exited with {managed.process.returncode}: "
                                   f"{managed.log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:  # nosec B310  # a fixed http:// URL on loopback
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise UnreachableError(f"{managed.name} not ready within {timeout_s:.0f} s; log: {managed.log_path}")


class ServiceRunner:
    """Starts services as processes and stops them; each gets its own web port."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.running: dict[str, ManagedProcess] = {}
        self.ports: dict[str, int] = {}

    def start(self, name: str, extra_env: dict[str, str] | None = None, instance: str = "", wait: bool = True) -> ManagedProcess:
        port = free_port()
        # The instance names the worker: a restart of the same instance fences its predecessor's transactions.
        env = settings_env(self.settings) | {"CIPHERSTREAM_WEB_PORT": str(port),
                                             "CIPHERSTREAM_WORKER_ID": instance or "0"} | (extra_env or {})
        managed = start_process(f"{name}{instance}", [sys.executable, "-m", f"services.{name}.app", "worker"],
                                self.log_dir, env)
        self.running[managed.name] = managed
        self.ports[managed.name] = port
        if wait:
            wait_ready(port, managed)
        return managed

    def start_both_parties(self) -> None:
        """Every bank service and the partner's, started together; returns once all are ready."""
        for name in BANK_SERVICES:
            self.start(name, wait=False)
        for name in PARTNER_SERVICES:
            self.start(name, extra_env=partner_env(self.settings), wait=False)
        self.wait_all_ready()

    def wait_all_ready(self) -> None:
        for name, managed in self.running.items():
            wait_ready(self.ports[name], managed)

    def stop_all(self) -> None:
        for managed in self.running.values():
            managed.stop()
        self.running.clear()
