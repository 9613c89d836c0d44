"""The campaign-response export: read into exactly the features scoring computes, and every bad
file refused with the file, row and column named."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from demo.generator.history import campaign_contacts, profile_of
from demo.generator.population import make_population
from services.models.bank_features import feature_vector
from services.models.history import HISTORY_COLUMNS, Contact, HistoryError, read_history, write_history
from services.protocol.stream_messages import CustomerEvent

HEADER = ",".join(HISTORY_COLUMNS)
GOOD = "C0000001,credit_card,1,2026-09-14T10:02:00+08:00,31,40,18250.00,52000.00,debit_card;mortgage,salary_credit,18250.00"


def test_history_rows_carry_the_features_scoring_computes_for_the_same_customer_and_event(tmp_path: Path) -> None:
    customers = make_population(20)
    contacts = list(campaign_contacts(customers))
    path = tmp_path / "export.csv"
    assert write_history(path, contacts) == len(contacts)
    rows = read_history(path)
    assert len(rows) == len(contacts) and {row.product for row in rows} == {c.product for c in contacts}
    by_id = {customer.customer_id: customer for customer in customers}
    for contact, row in list(zip(contacts, rows))[:50]:
        profile = profile_of(by_id[contact.customer_id], contact.contacted_at.date())
        event = CustomerEvent("e", contact.customer_id, contact.event_type, int(contact.event_amount * 100), "CNY", None,
                              0, 0, "t", 0, 0)
        assert np.array_equal(row.features, feature_vector(event, profile))
        assert row.label == contact.label and row.at_ms == int(contact.contacted_at.timestamp() * 1000)


def test_empty_cells_where_allowed_products_held_and_the_amount_of_a_login(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(f"{HEADER},extra_column\nC1,mortgage,0,2026-09-01T09:00:00Z,45,100,9000.50,-12.00,,app_login,,x\n\n")
    [row] = read_history(path)
    assert row.features[4] == 0.0 and row.features[-1] == 0.0  # products held, log event amount


@pytest.mark.parametrize(("line", "row", "column", "says"), [
    (GOOD.replace(",31,", ",thirty,"), 2, "age", "'thirty' is not a whole number"),
    (GOOD.replace(",1,2026", ",2,2026"), 2, "label", "'2' is not 0 or 1"),
    (GOOD.replace("credit_card,", "yacht,"), 2, "product", "'yacht' is not a product"),
    (GOOD.replace("+08:00", ""), 2, "contacted_at", "has no time zone"),
    (GOOD.replace("18250.00,52000.00", "18250.001,52000.00"), 2, "monthly_income", "more than two decimals"),
    (GOOD.replace("salary_credit", "lottery_win"), 2, "event_type", "'lottery_win' is not an event type"),
    (GOOD.replace(",31,", ",,"), 2, "age", "empty"),
    (GOOD.rsplit(",", 1)[0], 2, "*", "10 cells where the header has 11"),
])
def test_a_bad_cell_is_refused_naming_file_row_and_column(tmp_path: Path, line: str, row: int, column: str,
                                                           says: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"{HEADER}\n{line}\n{GOOD}\n")
    with pytest.raises(HistoryError) as raised:
        read_history(path)
    assert raised.value.problems[0][:2] == (row, column) and says in raised.value.problems[0][2]
    assert str(path) in str(raised.value) and f"row {row}, column {column}" in str(raised.value)


def test_a_missing_column_every_problem_and_an_unreadable_file_are_each_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(HEADER.replace(",label", "") + "\n")
    with pytest.raises(HistoryError, match=r"bad.csv: 1 problem: row 1, column label: missing from the header"):
        read_history(path)
    path.write_text(f"{HEADER}\n{GOOD.replace(',31,', ',x,')}\n{GOOD}\n{GOOD.replace(',1,2026', ',y,2026')}\n")
    with pytest.raises(HistoryError) as raised:
        read_history(path)
    assert [problem[:2] for problem in raised.value.problems] == [(2, "age"), (4, "label")]
    path.write_bytes(HEADER.encode() + b"\n\xff\xfe\n")
    with pytest.raises(HistoryError, match="not UTF-8"):
        read_history(path)
    with pytest.raises(HistoryError, match="cannot be read"):
        read_history(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(HistoryError, match="the file is empty"):
        read_history(tmp_path / "empty.csv")


def test_a_contact_written_is_read_back_with_the_same_values(tmp_path: Path) -> None:
    contact = Contact("C9", "wealth_fund", 1, dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.UTC), 50, 240,
                      Decimal("31000.10"), Decimal("420000.00"), ("credit_card", "debit_card"), "large_deposit",
                      Decimal("88000.00"))
    write_history(tmp_path / "one.csv", [contact])
    [row] = read_history(tmp_path / "one.csv")
    assert (row.customer_id, row.product, row.label) == ("C9", "wealth_fund", 1)
    assert row.features[0] == 50 and row.features[1] == 20 and row.features[4] == 2
