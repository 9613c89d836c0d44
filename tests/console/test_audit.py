"""The audit log on SQLite and PostgreSQL: a hash chain that names an edited, removed, reordered or
cut-off entry; a table that refuses UPDATE and DELETE; one chain under concurrent appends from two
"replicas"; search and masked CSV export; `cipherstream console verify-audit` and `create-admin`."""
from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError
from typer.testing import CliRunner

from services.cli import app as cli
from services.console.audit import AuditLog, AuditQuery, export_csv, head_token
from services.console.masking import find_unmasked
from tests.console.conftest import NATIONAL_ID, PASSWORD, PHONE


@pytest.fixture
def engine(empty_database_url: str) -> Iterator[Engine]:
    made = create_engine(empty_database_url)
    yield made
    made.dispose()


def _filled(engine: Engine, entries: int = 6) -> AuditLog:
    log = AuditLog(engine)
    for index in range(entries):
        log.append(actor=f"user{index % 2}", action="customer.read", target=f"customer:C{index}", customer_id=f"C{index}",
                   address="10.0.0.7", user_agent="pytest", detail={"index": index})
    return log


def _drop_the_guard(engine: Engine) -> None:
    """What someone with the database owner's rights could do before tampering."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("DROP TRIGGER console_audit_append_only ON console_audit_log"))
        else:
            connection.execute(text("DROP TRIGGER console_audit_no_update"))
            connection.execute(text("DROP TRIGGER console_audit_no_delete"))


def test_each_entry_links_to_the_one_before_and_the_chain_verifies(engine: Engine) -> None:
    log = _filled(engine)
    entries = list(log.entries())
    assert [entry.seq for entry in entries] == [1, 2, 3, 4, 5, 6]
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(entries))
    report = log.verify(head=log.head())
    assert report.intact and report.entries == 6 and report.head_seq == 6


def test_the_table_refuses_update_and_delete(engine: Engine) -> None:
    _filled(engine, 2)
    for statement in ("UPDATE console_audit_log SET actor = 'mallory'", "DELETE FROM console_audit_log"):
        with pytest.raises(DatabaseError, match="append-only"), engine.begin() as connection:
            connection.execute(text(statement))
    assert AuditLog(engine).verify().entries == 2


@pytest.mark.parametrize("tampering", ["edited", "removed", "reordered", "cut_off"])
def test_verify_names_an_edited_removed_reordered_or_cut_off_entry(engine: Engine, tampering: str) -> None:
    log = _filled(engine)
    head = log.head()
    _drop_the_guard(engine)
    with engine.begin() as connection:
        if tampering == "edited":
            connection.execute(text("UPDATE console_audit_log SET actor = 'someone_else' WHERE seq = 3"))
        elif tampering == "removed":
            connection.execute(text("DELETE FROM console_audit_log WHERE seq = 3"))
        elif tampering == "reordered":  # entries 3 and 4 swap places, each keeping its own hashes
            connection.execute(text("UPDATE console_audit_log SET seq = -3 WHERE seq = 3"))
            connection.execute(text("UPDATE console_audit_log SET seq = 3 WHERE seq = 4"))
            connection.execute(text("UPDATE console_audit_log SET seq = 4 WHERE seq = -3"))
        else:
            connection.execute(text("DELETE FROM console_audit_log WHERE seq = 6"))
    report = AuditLog(engine).verify(head=head)
    expected = {
        "edited": ["entry 3 was changed after it was written (its hash does not match)"],
        "removed": ["entry 4 follows entry 2: entries missing before it",
                    "entry 4 does not link to the entry before it (removed, inserted or reordered)"],
        "reordered": ["entry 3 does not link to the entry before it (removed, inserted or reordered)",
                      "entry 3 was changed after it was written (its hash does not match)",
                      "entry 4 does not link to the entry before it (removed, inserted or reordered)",
                      "entry 4 was changed after it was written (its hash does not match)",
                      "entry 5 does not link to the entry before it (removed, inserted or reordered)"],
        "cut_off": ["the chain ends at entry 5, before the recorded head 6"],
    }[tampering]
    assert report.problems == expected
    if tampering == "cut_off":
        assert AuditLog(engine).verify().intact  # without the recorded head a clean cut is invisible: keep the head


def test_two_replicas_appending_at_once_keep_one_unbroken_chain(empty_database_url: str) -> None:
    replicas = [create_engine(empty_database_url) for _ in range(2)]
    logs = [AuditLog(engine) for engine in replicas]

    def append(index: int) -> int:
        return logs[index % 2].append(actor=f"user{index}", action="login.ok", address="10.0.0.1").seq

    with ThreadPoolExecutor(8) as pool:
        sequences = list(pool.map(append, range(120)))
    assert sorted(sequences) == list(range(1, 121))
    assert logs[0].verify().intact
    for engine in replicas:
        engine.dispose()


def test_search_by_user_customer_action_and_time_and_a_masked_csv_export(engine: Engine) -> None:
    log = AuditLog(engine)
    start = dt.datetime.now(dt.UTC)
    log.append(actor="mia", action="customer.read", customer_id="C1", target="customer:C1", address="10.0.0.1",
               now=start)
    log.append(actor="mia", action="customer.reveal", customer_id="C1", target="customer:C1", address="10.0.0.1",
               detail={"shown": NATIONAL_ID, "note": f"called {PHONE}"}, now=start + dt.timedelta(minutes=5))
    log.append(actor="ana", action="login.failed", outcome="failed", address="10.0.0.2",
               now=start + dt.timedelta(minutes=10))
    assert [e.action for e in log.search(AuditQuery(actor="mia"))] == ["customer.reveal", "customer.read"]
    assert [e.actor for e in log.search(AuditQuery(customer_id="C1"))] == ["mia", "mia"]
    assert [e.action for e in log.search(AuditQuery(action="customer"))] == ["customer.reveal", "customer.read"]
    assert [e.action for e in log.search(AuditQuery(action="customer%"))] == []  # a prefix, not a pattern
    window = AuditQuery(since=start + dt.timedelta(minutes=1), until=start + dt.timedelta(minutes=9))
    assert [e.action for e in log.search(window)] == ["customer.reveal"]
    exported = export_csv(log.search(AuditQuery()))
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [row["action"] for row in rows] == ["login.failed", "customer.reveal", "customer.read"]
    assert find_unmasked(exported) == [] and "110***********002X" in exported and "138****5678" in exported


def test_the_cli_creates_the_first_admin_once_unlocks_and_verifies_the_chain(empty_database_url: str) -> None:
    runner = CliRunner()
    env = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "REDIS_URL": "redis://127.0.0.1:9/0", "DATABASE_URL": empty_database_url,
           "COLUMNS": "200"}
    made = runner.invoke(cli, ["console", "create-admin", "root.admin", "--password-stdin"], input=f"{PASSWORD}\n", env=env)
    assert made.exit_code == 0, made.output
    again = runner.invoke(cli, ["console", "create-admin", "other.admin", "--password-stdin"], input=f"{PASSWORD}\n", env=env)
    assert again.exit_code == 2 and "an admin exists" in again.output
    missing = runner.invoke(cli, ["console", "unlock", "nobody"], env=env)
    assert missing.exit_code == 2 and "no user" in missing.output
    assert runner.invoke(cli, ["console", "unlock", "root.admin"], env=env).exit_code == 0
    verified = runner.invoke(cli, ["console", "verify-audit"], env=env)
    assert verified.exit_code == 0 and "audit log intact: 3 entries" in verified.output, verified.output

    engine = create_engine(empty_database_url)
    seq, digest = AuditLog(engine).head()
    assert runner.invoke(cli, ["console", "verify-audit", "--head", head_token(seq, digest)], env=env).exit_code == 0
    ahead = runner.invoke(cli, ["console", "verify-audit", "--head", f"{seq + 5}:{digest}"], env=env)
    assert ahead.exit_code == 1 and f"before the recorded head {seq + 5}" in ahead.output
    _drop_the_guard(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE console_audit_log SET outcome = 'ok' WHERE seq = 2"))
    broken = runner.invoke(cli, ["console", "verify-audit"], env=env)
    assert broken.exit_code == 1 and "entry 2 was changed after it was written" in broken.output, broken.output
    engine.dispose()
