"""Settings: one frozen object built from the environment at start-up, passed to whoever needs it.

Production points each part at a real server with the usual variables
(`KAFKA_BOOTSTRAP_SERVERS`, `REDIS_URL`, `DATABASE_URL`, ...); everything else carries the
`CIPHERSTREAM_` prefix. A missing required value stops the service at start with a clear
error instead of failing on the first event.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env(name: str) -> AliasChoices:
    """Accept both the plain production variable and its CIPHERSTREAM_-prefixed twin."""
    return AliasChoices(f"CIPHERSTREAM_{name}", name)


class Settings(BaseSettings):
    """Everything a Cipherstream service reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="CIPHERSTREAM_", frozen=True, extra="ignore")

    party: Literal["bank", "partner"] = "bank"
    kafka_bootstrap_servers: str = Field(validation_alias=_env("KAFKA_BOOTSTRAP_SERVERS"))
    # The cross-party exchange topics may live on a separate, ACL-restricted cluster.
    exchange_bootstrap_servers: str | None = Field(default=None, validation_alias=_env("EXCHANGE_BOOTSTRAP_SERVERS"))
    redis_url: SecretStr = Field(validation_alias=_env("REDIS_URL"))
    database_url: SecretStr = Field(
        default=SecretStr(f"sqlite:///{REPO_ROOT / '.cipherstream' / 'cipherstream.db'}"),
        validation_alias=_env("DATABASE_URL"),
    )
    schema_registry_url: str | None = Field(default=None, validation_alias=_env("SCHEMA_REGISTRY_URL"))
    schema_dir: Path = REPO_ROOT / "schemas"
    data_dir: Path = REPO_ROOT / ".cipherstream" / "data"
    key_dir: Path = REPO_ROOT / ".cipherstream" / "keys"

    # Fresh names per test run: every topic and Redis key is prefixed.
    topic_prefix: str = ""
    redis_key_prefix: str = "cs:"
    topic_partitions: int = Field(default=4, ge=1)

    web_port: int = Field(default=6066, ge=0, le=65535)
    web_enabled: bool = True
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Batching of the hot path: at most this many events per batch, waiting at most this long.
    batch_max_events: int = Field(default=1000, ge=1)
    batch_window_s: float = Field(default=0.01, gt=0)
    # Upper bound on one consumer fetch; see core/kafka/faust_transport.py for why it is low by default.
    fetch_max_wait_ms: int = Field(default=10, ge=1, le=30_000)
    # Local runs: faust's default group join can sit for 30 s, so lower the rebalance timeouts.
    broker_rebalance_timeout_s: float = Field(default=10.0, gt=0)
    broker_session_timeout_s: float = Field(default=10.0, gt=0)
    broker_heartbeat_interval_s: float = Field(default=1.0, gt=0)

    # Kafka transactions (each batch's outputs and input offsets commit atomically; consumers read
    # committed only) and idempotent producers. Off only on the Tansu fallback, which has neither.
    exactly_once: bool = True
    # This worker's stable name within its service (a pod name, an instance number): it makes
    # the transactional id, so a restarted worker fences its predecessor's open transaction.
    worker_id: str = Field(default="0", pattern=r"^[A-Za-z0-9._-]{1,64}$")

    # Replicated services drop a dead member after this long: exchange and partner pass their
    # lease to a standby (core/lease.py), reporting moves its partitions to the replica that holds
    # their standby tables. Kafka refuses sessions shorter than the broker's
    # group.min.session.timeout.ms (6 s by default; the embedded broker's is 1 s).
    failover_session_timeout_s: float = Field(default=3.0, gt=0)

    # A Redis call that takes longer fails (and the batch is replayed) instead of hanging the stage.
    redis_timeout_s: float = Field(default=2.0, gt=0)

    # Card spend outside this country is a "card spend abroad" trigger.
    home_country: str = Field(default="CN", pattern=r"^[A-Z]{2}$")

    # Dispatch contact policy (issue-level defaults; campaigns may tighten them).
    # Overrides the campaign file's daily and weekly caps (load tests set it high); unset: the file's.
    max_offers_per_customer_per_day: int | None = Field(default=None, ge=0)
    # Quiet hours from the campaign file; off for runs that must not depend on the time of day.
    quiet_hours: bool = True
    # How often scoring looks for newly trained federated versions in the registry.
    model_refresh_s: float = Field(default=30.0, gt=0)
    campaigns_file: Path = REPO_ROOT / "services" / "dispatch" / "campaigns.yaml"
    # How often dispatch looks for changed campaigns (the file, or the console's in SQL).
    campaign_refresh_s: float = Field(default=5.0, gt=0)
    # How many days of campaign performance the reporting service keeps (13 months: a year on year).
    report_retention_days: int = Field(default=400, ge=1)
    # The operator console (services/console/): accounts lock after this many failed logins within
    # the window, and unlock after the cool-down (or by an admin).
    console_lockout_failures: int = Field(default=5, ge=1)
    console_lockout_window_s: float = Field(default=900.0, gt=0)
    console_lockout_cooldown_s: float = Field(default=900.0, gt=0)
    # More logins than this for one user within the burst window are challenged for a second factor.
    console_login_burst: int = Field(default=5, ge=1)
    console_login_burst_window_s: float = Field(default=60.0, gt=0)
    # A session ends after this long idle, and at the latest this long after login.
    console_session_idle_s: float = Field(default=900.0, gt=0)
    console_session_max_s: float = Field(default=8 * 3600.0, gt=0)
    # Session cookies only over HTTPS; off for plain-HTTP runs on this machine (tests, `make demo`).
    console_cookie_secure: bool = True
    # The console keeps the latest scores, offers and responses of each customer, this many of each.
    console_customer_history: int = Field(default=20, ge=1)
    # Whether the console consumes the customer topics into its own tables (off: it serves what is there).
    console_feed: bool = True

    @property
    def exchange_servers(self) -> str:
        return self.exchange_bootstrap_servers or self.kafka_bootstrap_servers

    def topic(self, name: str) -> str:
        """The broker-side name of a logical topic (`customer.events` -> `<prefix>customer.events`)."""
        return f"{self.topic_prefix}{name}"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, turning a missing or bad value into a ConfigError.

    >>> load_settings(kafka_bootstrap_servers="127.0.0.1:9092", redis_url="redis://127.0.0.1:6379/0").party
    'bank'
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'/'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"invalid or missing settings: {problems}") from exc
