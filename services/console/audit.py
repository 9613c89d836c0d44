"""The audit log (finding BJKJ-002): who did what to whom, when, from where, with what outcome.

Every read of a customer's personal data in the console, every personal number shown in full,
every change to campaigns, accounts, roles and grants, every login, lockout, challenge and
refusal is one entry. Entries are only ever appended:

- each carries the SHA-256 of the entry before it (`prev_hash`) and its own hash over all its
  fields and that link, so an edited entry no longer matches its hash, a removed one leaves a gap
  in the sequence and a broken link, and a reordered pair breaks the links on both sides;
  `cipherstream console verify-audit` walks the chain and names each break. Cutting entries off
  the end leaves a valid shorter chain: that is caught against a head (sequence and hash) kept
  elsewhere, which every append also writes to the operational log;
- the database refuses UPDATE and DELETE on the table (a trigger, on SQLite and PostgreSQL), so a
  bug or a mistaken query cannot change history; someone with the rights to drop the trigger is
  still caught by the chain;
- appends from several console replicas are ordered by the sequence number, the primary key: the
  loser of a race gets a conflict and appends again after the winner.

Details hold no personal number in clear (they go through `mask_personal_numbers`).
"""
from __future__ import annotations

import base64
import csv
import dataclasses
import datetime as dt
import hashlib
import io
import json
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, String, Text, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from services.console.masking import mask_personal_numbers
from services.core.logs import facts
from services.core.sql import Base, ensure_tables

log = logging.getLogger(__name__)
GENESIS = "0" * 64
APPEND_ATTEMPTS = 20
COLUMNS = ("seq", "at", "actor", "action", "target", "customer_id", "address", "user_agent", "outcome", "detail",
           "prev_hash", "hash")
OUTCOMES = ("ok", "denied", "failed")


class AuditRow(Base):
    __tablename__ = "console_audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(32), index=True)  # ISO 8601 UTC, microseconds: hashed as written
    actor: Mapped[str] = mapped_column(String(128), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(256))
    customer_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    address: Mapped[str] = mapped_column(String(64))
    user_agent: Mapped[str] = mapped_column(String(256))
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text)  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: str
    actor: str
    action: str
    target: str
    customer_id: str | None
    address: str
    user_agent: str
    outcome: str
    detail: str
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {column: getattr(self, column) for column in COLUMNS}


def entry_hash(seq: int, at: str, actor: str, action: str, target: str, customer_id: str | None, address: str,
               user_agent: str, outcome: str, detail: str, prev_hash: str) -> str:
    """SHA-256 over every field of an entry and the hash of the one before, as canonical JSON.

    >>> entry_hash(1, "2024-01-01T00:00:00.000000+00:00", "alice", "login", "user:alice", None, "127.0.0.1", "ua",
    ...            "ok", "{}", GENESIS)[:16]
    '338abe20fdf68298'
    """
    fields = [seq, at, actor, action, target, customer_id, address, user_agent, outcome, detail, prev_hash]
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


@dataclass
class ChainReport:
    """What verifying the chain found: how many entries, the head, and every break (empty: intact)."""

    entries: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


def verify_chain(entries: Iterable[AuditEntry], head: tuple[int, str] | None = None) -> ChainReport:
    """Walk entries in sequence order: each must follow the one before, link to its hash and match its own.

    `head`: the last (sequence, hash) recorded elsewhere; a chain that ends before it was cut short.

    >>> first = AuditEntry(1, "t", "a", "x", "", None, "", "", "ok", "{}", GENESIS, "")
    >>> first = AuditEntry(**{**first.as_dict(), "hash": entry_hash(*list(first.as_dict().values())[:11])})
    >>> verify_chain([first]).intact, verify_chain([first], head=(2, "ff")).problems
    (True, ['the chain ends at entry 1, before the recorded head 2'])
    """
    report = ChainReport()
    expected_seq, previous = 1, GENESIS
    for entry in entries:
        report.entries += 1
        if entry.seq != expected_seq:
            report.problems.append(f"entry {entry.seq} follows entry {expected_seq - 1}: "
                                   f"{'entries missing before it' if entry.seq > expected_seq else 'out of order'}")
        if entry.prev_hash != previous:
            report.problems.append(f"entry {entry.seq} does not link to the entry before it (removed, inserted or reordered)")
        recomputed = entry_hash(entry.seq, entry.at, entry.actor, entry.action, entry.target, entry.customer_id,
                                entry.address, entry.user_agent, entry.outcome, entry.detail, entry.prev_hash)
        if recomputed != entry.hash:
            report.problems.append(f"entry {entry.seq} was changed after it was written (its hash does not match)")
        expected_seq, previous = entry.seq + 1, entry.hash
        report.head_seq, report.head_hash = entry.seq, entry.hash
    if head is not None:
        head_seq, head_hash = head
        if report.head_seq < head_seq:
            report.problems.append(f"the chain ends at entry {report.head_seq}, before the recorded head {head_seq}")
        elif report.head_seq == head_seq and report.head_hash != head_hash:
            report.problems.append(f"entry {head_seq} is not the recorded head (its hash differs)")
    return report


@dataclass(frozen=True)
class AuditQuery:
    """Search terms; each one set narrows the result. `action` matches a prefix (`login` finds `login.failed`)."""

    actor: str | None = None
    customer_id: str | None = None
    action: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: int = 200
    before_seq: int | None = None  # paging: entries older than this one


_APPEND_ONLY_SQLITE = (
    "CREATE TRIGGER IF NOT EXISTS console_audit_no_update BEFORE UPDATE ON console_audit_log "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS console_audit_no_delete BEFORE DELETE ON console_audit_log "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
)
_APPEND_ONLY_POSTGRESQL = (
    "CREATE OR REPLACE FUNCTION console_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$",
    "CREATE OR REPLACE TRIGGER console_audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON console_audit_log "
    "FOR EACH STATEMENT EXECUTE FUNCTION console_audit_append_only()",
)


def printable(text_: str, limit: int) -> str:
    """What a caller sent, as it may be stored and searched: printable characters only (PostgreSQL
    refuses a NUL in text), personal numbers masked, cut to the column's length.

    >>> printable("mallory" + chr(0) + " 13812345678", 64)
    'mallory 138****5678'
    """
    return mask_personal_numbers("".join(c for c in text_ if c.isprintable()))[:limit]


def head_token(seq: int, digest: str) -> str:
    """The head as the operational log carries it: `seq:` and the hash in base64, which the log's
    masking of long digit runs leaves intact (a hex hash can hold seven digits in a row).

    >>> head_token(7, GENESIS)
    '7:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'
    >>> parse_head(head_token(7, "ab" * 32)) == (7, "ab" * 32) == parse_head("7:" + "ab" * 32)
    True
    """
    return f"{seq}:{base64.urlsafe_b64encode(bytes.fromhex(digest)).decode().rstrip('=')}"


def parse_head(text_: str) -> tuple[int, str]:
    """`SEQ:HASH` with the hash in hex (the API, the CLI) or base64 (the log line); ValueError if neither."""
    seq, _, encoded = text_.strip().partition(":")
    if not seq.isdigit():
        raise ValueError("a head is SEQ:HASH")
    if len(encoded) == 64 and all(c in "0123456789abcdef" for c in encoded):
        return int(seq), encoded
    try:
        digest = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except ValueError as error:
        raise ValueError("the hash of a head is 64 hex digits or 43 base64 characters") from error
    if len(digest) != 32:
        raise ValueError("the hash of a head is 64 hex digits or 43 base64 characters")
    return int(seq), digest.hex()


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


class AuditLog:
    """Append, search, export and verify the audit log in SQL."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        ensure_tables(self.engine, [Base.metadata.tables[AuditRow.__tablename__]])
        self._refuse_changes()
        self._lock = threading.Lock()  # one append at a time in this process; across processes, the key decides

    def _refuse_changes(self, attempts: int = 5) -> None:
        statements = _APPEND_ONLY_POSTGRESQL if self.engine.dialect.name == "postgresql" else _APPEND_ONLY_SQLITE
        for attempt in range(attempts):
            try:
                with self.engine.begin() as connection:
                    for statement in statements:
                        connection.execute(text(statement))
                return
            except DatabaseError:  # replicas starting together race to replace the function
                if attempt == attempts - 1:
                    raise

    def append(self, *, actor: str, action: str, target: str = "", outcome: str = "ok", customer_id: str | None = None,
               address: str = "", user_agent: str = "", detail: dict[str, Any] | None = None,
               now: dt.datetime | None = None) -> AuditEntry:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        detail_text = mask_personal_numbers(json.dumps(detail or {}, sort_keys=True, ensure_ascii=False))
        values = {"at": _iso(now or dt.datetime.now(dt.UTC)), "actor": printable(actor, 128),
                  "action": printable(action, 64), "target": printable(target, 256),
                  "customer_id": None if customer_id is None else printable(customer_id, 64),
                  "address": printable(address, 64), "user_agent": printable(user_agent, 256), "outcome": outcome,
                  "detail": detail_text}
        with self._lock:
            for _ in range(APPEND_ATTEMPTS):
                try:
                    with Session(self.engine) as session, session.begin():
                        last = session.execute(select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc())
                                               .limit(1)).first()
                        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
                        digest = entry_hash(seq, prev_hash=prev_hash, **values)
                        session.add(AuditRow(seq=seq, prev_hash=prev_hash, hash=digest, **values))
                    break
                except IntegrityError:  # another replica appended this sequence number first
                    continue
            else:
                raise RuntimeError(f"could not append to the audit log after {APPEND_ATTEMPTS} attempts")
        # The head, outside the database: what `verify-audit --head` checks a cut-off end against.
        log.info("audit appended", extra=facts(seq=seq, action=values["action"], outcome=outcome,
                                               head=head_token(seq, digest)))
        return AuditEntry(seq=seq, prev_hash=prev_hash, hash=digest, **values)

    def search(self, query: AuditQuery) -> list[AuditEntry]:
        query = dataclasses.replace(query, **{name: printable(getattr(query, name), 128)
                                              for name in ("actor", "customer_id", "action") if getattr(query, name)})
        statement = select(AuditRow).order_by(AuditRow.seq.desc()).limit(max(1, min(query.limit, 5000)))
        if query.actor:
            statement = statement.where(AuditRow.actor == query.actor)
        if query.customer_id:
            statement = statement.where(AuditRow.customer_id == query.customer_id)
        if query.action:
            statement = statement.where(AuditRow.action.startswith(query.action, autoescape=True))
        if query.since:
            statement = statement.where(AuditRow.at >= _iso(query.since))
        if query.until:
            statement = statement.where(AuditRow.at <= _iso(query.until))
        if query.before_seq:
            statement = statement.where(AuditRow.seq < query.before_seq)
        with Session(self.engine) as session:
            return [_entry(row) for row in session.scalars(statement)]

    def entries(self) -> Iterator[AuditEntry]:
        """Every entry in sequence order, read in pages (the log may be long)."""
        after = 0
        while True:
            with Session(self.engine) as session:
                rows = list(session.scalars(select(AuditRow).where(AuditRow.seq > after).order_by(AuditRow.seq).limit(1000)))
            if not rows:
                return
            yield from (_entry(row) for row in rows)
            after = rows[-1].seq

    def head(self) -> tuple[int, str]:
        """The last entry's sequence number and hash (0 and the genesis hash when empty)."""
        with Session(self.engine) as session:
            last = session.execute(select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc()).limit(1)).first()
        return (last[0], last[1]) if last else (0, GENESIS)

    def verify(self, head: tuple[int, str] | None = None) -> ChainReport:
        return verify_chain(self.entries(), head)



def export_csv(entries: Iterable[AuditEntry]) -> str:
    """Entries as CSV, one header row, personal numbers masked (they are masked when written, and again here).

    >>> export_csv([]).strip()
    'seq,at,actor,action,target,customer_id,address,user_agent,outcome,detail,prev_hash,hash'
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for entry in entries:
        writer.writerow([_cell(value) for value in entry.as_dict().values()])
    return mask_personal_numbers(buffer.getvalue())


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet will not run: text that starts like a formula gets a leading quote.

    >>> _cell("=HYPERLINK(1)"), _cell(None), _cell(7)
    ("'=HYPERLINK(1)", '', '7')
    """
    cell = "" if value is None else str(value)
    return f"'{cell}" if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell


def _entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(*(getattr(row, column) for column in COLUMNS))
