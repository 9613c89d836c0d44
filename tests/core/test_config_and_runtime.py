"""Settings fail at start when incomplete; unreachable parts give clear errors; the embedded
stack leaves nothing running."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.core.config import load_settings
from services.core.embedded.processes import free_port
from services.core.errors import ConfigError, UnreachableError
from services.core.runtime import check_database, check_kafka, check_redis, embedded_broker_kind, embedded_stack


def test_missing_kafka_and_redis_settings_stop_the_service_with_their_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "CIPHERSTREAM_KAFKA_BOOTSTRAP_SERVERS", "CIPHERSTREAM_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "KAFKA_BOOTSTRAP_SERVERS" in str(raised.value) and "REDIS_URL" in str(raised.value)


def test_production_variables_are_read_without_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-0:9092,kafka-1:9092")
    monkeypatch.setenv("REDIS_URL", "redis://:secret@redis:6379/0")
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://cs:pw@pg/cs")
    settings = load_settings()
    assert settings.kafka_bootstrap_servers == "kafka-0:9092,kafka-1:9092"
    assert settings.exchange_servers == "kafka-0:9092,kafka-1:9092"
    assert "secret" not in repr(settings)


def test_invalid_value_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k:9092")
    monkeypatch.setenv("REDIS_URL", "redis://r")
    monkeypatch.setenv("CIPHERSTREAM_BATCH_MAX_EVENTS", "0")
    with pytest.raises(ConfigError, match="batch_max_events"):
        load_settings()


def test_unreachable_kafka_redis_and_database_raise_clear_errors(tmp_path: Path) -> None:
    closed_port = free_port()
    with pytest.raises(UnreachableError, match=f"Kafka at 127.0.0.1:{closed_port}"):
        asyncio.run(check_kafka(f"127.0.0.1:{closed_port}", timeout_s=3))
    with pytest.raises(UnreachableError, match=r"Redis at redis://user:\*\*\*@127\.0\.0\.1"):
        asyncio.run(check_redis(f"redis://user:pw@127.0.0.1:{closed_port}/0", timeout_s=2))
    with pytest.raises(UnreachableError, match="database"):
        check_database(f"postgresql+psycopg2://cs:pw@127.0.0.1:{closed_port}/cs")


@pytest.mark.tansu_smoke
def test_embedded_stack_starts_reachable_parts_and_stops_them(tmp_path: Path) -> None:
    kind = embedded_broker_kind()  # Apache Kafka, or Tansu in the fallback's smoke run
    with embedded_stack(tmp_path, environ={"CIPHERSTREAM_EMBEDDED_BROKER": kind}) as stack:
        assert stack.broker_kind == kind
        # Services are told when the broker has no transactions (Tansu), and only then.
        assert (stack.env.get("CIPHERSTREAM_EXACTLY_ONCE") == "false") == (kind == "tansu")
        asyncio.run(check_kafka(stack.env["KAFKA_BOOTSTRAP_SERVERS"]))
        asyncio.run(check_redis(stack.env["REDIS_URL"]))
        check_database(stack.env["DATABASE_URL"])
        processes = [managed.process for managed in stack.processes]
        assert len(processes) == 2
    assert all(process.poll() is not None for process in processes)


def test_embedded_stack_uses_configured_parts_instead_of_starting_its_own(tmp_path: Path) -> None:
    with embedded_stack(tmp_path, environ={"KAFKA_BOOTSTRAP_SERVERS": "k:1", "REDIS_URL": "redis://r", "DATABASE_URL": "sqlite://"}) as stack:
        assert stack.processes == [] and stack.env == {}


def test_an_unknown_embedded_broker_is_a_config_error_naming_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CIPHERSTREAM_EMBEDDED_BROKER must be one of kafka, tansu"), \
            embedded_stack(tmp_path, environ={"CIPHERSTREAM_EMBEDDED_BROKER": "redpanda"}):
        pass
