"""The bank's campaign-response history: what every product's models are first trained from.

A campaign-response export is one CSV file (UTF-8, a header row, one row per past contact):

    customer_id,product,label,contacted_at,age,tenure_months,monthly_income,balance,products_held,event_type,event_amount
    C0000001,credit_card,1,2026-09-14T10:02:00+08:00,31,40,18250.00,52000.00,debit_card;mortgage,salary_credit,18250.00

- `customer_id`: the bank's customer id (as in the core-banking feed); `product`: one of PRODUCTS;
  `label`: 1 converted, 0 did not (ignored or opted out); `contacted_at`: when the offer was made,
  ISO 8601 with a time zone.
- The customer and the trigger as they were at that moment, in the raw units the core-banking
  feed uses: `age` (years), `tenure_months`, `monthly_income` and `balance` (decimals in the
  currency's major units, up to two decimals), `products_held` (names separated by `;`, empty for
  none), `event_type` (the trigger, one of the event types of customer.events) and
  `event_amount` (major units; empty for an event without one, such as an app login).

The bank features are computed from these by services/models/bank_features.py, the same code
scoring runs on every live event, so a model learns exactly the features it is later served.
Other columns are ignored. Any bad cell stops the read with a HistoryError naming the file,
the row (the header is row 1, as a spreadsheet counts) and the column; every problem is listed.
"""
from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from services.core.errors import ValidationError
from services.models.bank_features import PRODUCTS, feature_vector
from services.protocol.stream_messages import TRIGGER_EVENT_TYPES, CustomerEvent, CustomerProfile, EventType

HISTORY_COLUMNS: tuple[str, ...] = (
    "customer_id", "product", "label", "contacted_at", "age", "tenure_months", "monthly_income", "balance",
    "products_held", "event_type", "event_amount",
)
MAX_AMOUNT_MAJOR = Decimal("1e12")  # as ingest: no retail customer's amount is a quadrillion
MAX_PROBLEMS_LISTED = 20
_CUSTOMER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PRODUCT_NAME = re.compile(r"^[a-z_]{1,32}$")


@dataclass(frozen=True)
class HistoryRow:
    """One past contact: who, which product, the bank features scored then, and the outcome."""

    customer_id: str
    product: str
    features: np.ndarray  # FEATURE_NAMES order
    label: int  # 1 converted, 0 not
    at_ms: int  # when the contact was made, epoch ms UTC


@dataclass(frozen=True)
class Contact:
    """A row of the export as its raw fields (what `write_history` writes)."""

    customer_id: str
    product: str
    label: int
    contacted_at: dt.datetime
    age: int
    tenure_months: int
    monthly_income: Decimal
    balance: Decimal
    products_held: tuple[str, ...]
    event_type: EventType
    event_amount: Decimal

    def cells(self) -> list[str]:
        return [self.customer_id, self.product, str(self.label), self.contacted_at.isoformat(), str(self.age),
                str(self.tenure_months), f"{self.monthly_income:.2f}", f"{self.balance:.2f}",
                ";".join(self.products_held), self.event_type, f"{self.event_amount:.2f}"]


class HistoryError(ValidationError):
    """A history export that cannot be read; `problems` lists (row, column, what is wrong)."""

    reason = "bad_history"

    def __init__(self, source: str, problems: Sequence[tuple[int, str, str]]) -> None:
        listed = "; ".join(f"row {row}, column {column}: {what}" if row else what
                           for row, column, what in problems[:MAX_PROBLEMS_LISTED])
        more = f" (and {len(problems) - MAX_PROBLEMS_LISTED} more)" if len(problems) > MAX_PROBLEMS_LISTED else ""
        super().__init__(f"{source}: {len(problems)} problem{'s' * (len(problems) != 1)}: {listed}{more}")
        self.source = source
        self.problems = list(problems)


class _Cell(ValueError):
    """One cell's problem, raised by the parsers below and collected per row."""


def _text(value: str) -> str:
    if not value:
        raise _Cell("empty")
    return value


def _customer_id(value: str) -> str:
    if not _CUSTOMER_ID.match(value):
        raise _Cell(f"{value[:40]!r} is not a customer id (1-64 letters, digits, _ or -)")
    return value


def _product(value: str) -> str:
    if value not in PRODUCTS:
        raise _Cell(f"{value[:40]!r} is not a product ({', '.join(PRODUCTS)})")
    return value


def _label(value: str) -> int:
    if value not in ("0", "1"):
        raise _Cell(f"{value[:40]!r} is not 0 or 1")
    return int(value)


def _moment(value: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(value) if value else None
    except ValueError as exc:
        raise _Cell(f"{value[:40]!r} is not an ISO 8601 time") from exc
    if moment is None:
        raise _Cell("empty")
    if moment.tzinfo is None:
        raise _Cell(f"{value[:40]!r} has no time zone")
    return moment


def _whole(value: str, low: int, high: int) -> int:
    try:
        number = int(_text(value))
    except _Cell:
        raise
    except ValueError as exc:
        raise _Cell(f"{value[:40]!r} is not a whole number") from exc
    if not low <= number <= high:
        raise _Cell(f"{number} is outside {low}..{high}")
    return number


def _money(value: str, *, empty_is_zero: bool = False, negative: bool = False) -> Decimal:
    if not value and empty_is_zero:
        return Decimal(0)
    try:
        amount = Decimal(_text(value))
    except InvalidOperation as exc:
        raise _Cell(f"{value[:40]!r} is not a decimal number") from exc
    if not amount.is_finite() or abs(amount) > MAX_AMOUNT_MAJOR:
        raise _Cell(f"{value[:40]!r} is out of range")
    if amount < 0 and not negative:
        raise _Cell(f"{value[:40]!r} is negative")
    if amount != amount.quantize(Decimal("0.01")):
        raise _Cell(f"{value[:40]!r} has more than two decimals")
    return amount


def _products_held(value: str) -> tuple[str, ...]:
    held = tuple(name.strip() for name in value.split(";") if name.strip())
    bad = [name for name in held if not _PRODUCT_NAME.match(name)]
    if bad:
        raise _Cell(f"{bad[0][:40]!r} is not a product name")
    return held


def _event_type(value: str) -> EventType:
    if value not in TRIGGER_EVENT_TYPES:
        raise _Cell(f"{value[:40]!r} is not an event type ({', '.join(TRIGGER_EVENT_TYPES)})")
    return value  # type: ignore[return-value]  # checked against the Literal's values just above


def _contact(cells: dict[str, str], row: int, problems: list[tuple[int, str, str]]) -> Contact | None:
    parsed: dict[str, object] = {}
    for column, parse in (
        ("customer_id", _customer_id), ("product", _product), ("label", _label), ("contacted_at", _moment),
        ("age", lambda value: _whole(value, 0, 130)), ("tenure_months", lambda value: _whole(value, 0, 12 * 130)),
        ("monthly_income", _money), ("balance", lambda value: _money(value, negative=True)),
        ("products_held", _products_held), ("event_type", _event_type),
        ("event_amount", lambda value: _money(value, empty_is_zero=True)),
    ):
        try:
            parsed[column] = parse(cells[column].strip())
        except _Cell as problem:
            problems.append((row, column, str(problem)))
    return Contact(**parsed) if len(parsed) == len(HISTORY_COLUMNS) else None  # type: ignore[arg-type]


def history_row(contact: Contact) -> HistoryRow:
    """The features scoring would have computed at the contact, from its raw fields.

    >>> contact = Contact("C1", "mortgage", 1, dt.datetime(2026, 9, 1, tzinfo=dt.UTC), 40, 24, Decimal("20000"),
    ...                   Decimal("-15.50"), ("credit_card",), "salary_credit", Decimal("20000"))
    >>> row = history_row(contact)
    >>> row.product, row.label, row.at_ms, row.features[0]
    ('mortgage', 1, 1788220800000, np.float64(40.0))
    """
    at_ms = int(contact.contacted_at.timestamp() * 1000)
    profile = CustomerProfile(contact.customer_id, contact.age, contact.tenure_months, int(contact.monthly_income * 100),
                              int(contact.balance * 100), contact.products_held, "", "", "", True, at_ms)
    event = CustomerEvent(f"history:{contact.customer_id}:{at_ms}", contact.customer_id, contact.event_type,
                          int(contact.event_amount * 100), "", None, at_ms, at_ms, "history", 0, 0)
    return HistoryRow(contact.customer_id, contact.product, feature_vector(event, profile), contact.label, at_ms)


def parse_history(lines: Iterable[str], source: str) -> list[HistoryRow]:
    """The rows of a campaign-response export (CSV text, header first); `source` names it in errors.

    >>> header = ",".join(HISTORY_COLUMNS)
    >>> good = "C1,credit_card,0,2026-09-01T09:00:00Z,30,12,9000.00,100.00,,app_login,"
    >>> [row.customer_id for row in parse_history([header, good], "export.csv")]
    ['C1']
    >>> parse_history([header, good.replace(",0,", ",yes,")], "export.csv")
    Traceback (most recent call last):
    ...
    services.models.history.HistoryError: export.csv: 1 problem: row 2, column label: 'yes' is not 0 or 1
    """
    reader = csv.reader(lines)
    header = [name.strip() for name in next(reader, [])]
    if not header:
        raise HistoryError(source, [(1, "*", "no header row (the file is empty)")])
    missing = [column for column in HISTORY_COLUMNS if column not in header]
    if missing:
        raise HistoryError(source, [(1, column, "missing from the header") for column in missing])
    problems: list[tuple[int, str, str]] = []
    rows: list[HistoryRow] = []
    for row_number, cells in enumerate(reader, start=2):
        if not any(cell.strip() for cell in cells):
            continue  # a blank line, as spreadsheets leave at the end
        if len(cells) != len(header):
            problems.append((row_number, "*", f"{len(cells)} cells where the header has {len(header)}"))
            continue
        contact = _contact(dict(zip(header, cells, strict=True)), row_number, problems)
        if contact is not None:
            rows.append(history_row(contact))
    if problems:
        raise HistoryError(source, problems)
    return rows


def split_by_time(rows: Sequence[HistoryRow], holdout_fraction: float) -> tuple[list[HistoryRow], list[HistoryRow]]:
    """Training rows and holdout rows: the latest `holdout_fraction` of the contacts are held out,
    so a model is judged on contacts that came after everything it learned from (out of time),
    as it will be in service.

    >>> rows = [HistoryRow("C", "p", np.zeros(1), at % 2, at) for at in (5, 1, 4, 2, 3)]
    >>> train, holdout = split_by_time(rows, 0.4)
    >>> [row.at_ms for row in train], [row.at_ms for row in holdout]
    ([1, 2, 3], [4, 5])
    """
    ordered = sorted(rows, key=lambda row: row.at_ms)
    cut = len(ordered) - round(len(ordered) * holdout_fraction)
    return ordered[:cut], ordered[cut:]


def read_history(path: Path) -> list[HistoryRow]:
    """`parse_history` of a file; a file that cannot be read is a HistoryError too."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return parse_history(handle, str(path))
    except UnicodeDecodeError as exc:
        raise HistoryError(str(path), [(0, "*", f"not UTF-8 text (byte {exc.start})")]) from exc
    except OSError as exc:
        raise HistoryError(str(path), [(0, "*", f"cannot be read: {exc.strerror or exc}")]) from exc


def write_history(path: Path, contacts: Iterable[Contact]) -> int:
    """Write contacts as an export `read_history` reads; return how many rows were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HISTORY_COLUMNS)
        for contact in contacts:
            writer.writerow(contact.cells())
            written += 1
    return written
