"""`cipherstream federated evaluate` on exported files: FATE's breast, raw-shaped halves with partly shared
ids under real Paillier, and every kind of bad input (exit 2, naming the file, row and column)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import app
from services.models.datasets import write_vertical
from services.models.raw_shaped import raw_shaped
from tests.conftest import SHARED_DATA

RUNNER = CliRunner()
WIDE = {"COLUMNS": "200"}


def run(*arguments: str):  # type: ignore[no-untyped-def]
    return RUNNER.invoke(app, ["federated", "evaluate", *arguments], env=WIDE)


def test_breast_prints_the_federated_auc_beside_central_and_bank_only() -> None:
    guest, host = SHARED_DATA / "breast_hetero_guest.csv", SHARED_DATA / "breast_hetero_host.csv"
    printed = run("--guest", str(guest), "--host", str(host), "--plaintext")
    assert printed.exit_code == 0, printed.output
    for line in ("federated (both parties, by the protocol)", "central LR, same prepared rows", "bank's features alone",
                 "569 aligned by PSI", "converged"):
        assert line in printed.output, printed.output
    scripted = run("--guest", str(guest), "--host", str(host), "--plaintext", "--json", "--test-fraction", "0.25")
    result = json.loads(scripted.output)
    assert result["rows"] | {"aligned": 569, "test": 142} == result["rows"]
    assert result["central"]["auc"] > 0.98 and abs(result["federated"]["auc"] - result["central"]["auc"]) <= 0.005
    assert 0 < result["federated"]["ks"] <= 1 and result["training"]["encrypted"] is False
    assert set(result) == {"model", "rows", "federated", "central", "bank_only", "training", "preparation", "seconds",
                           "bytes", "files"}


@pytest.mark.slow  # real 2048-bit Paillier
def test_raw_shaped_halves_with_partly_shared_ids_under_paillier(tmp_path: Path) -> None:
    bank, partner = raw_shaped(bank_rows=700, overlap=0.7, partner_extra=0.3, seed=11)
    guest, host = tmp_path / "bank.csv", tmp_path / "bureau.csv"
    write_vertical(bank, partner, guest, host)
    printed = run("--guest", str(guest), "--host", str(host), "--json", "--workers", "2")
    assert printed.exit_code == 0, printed.output
    result = json.loads(printed.output)
    assert result["rows"]["guest"] == 700 and result["rows"]["host"] == 700 and result["rows"]["aligned"] == 490
    assert result["training"]["encrypted"] and result["training"]["key_bits"] == 2048
    assert abs(result["federated"]["auc"] - result["central"]["auc"]) <= 0.01, result
    assert result["federated"]["auc"] >= result["bank_only"]["auc"] + 0.03, result
    assert result["bytes"]["training_to_partner"] > 256 * result["rows"]["train"]  # ciphertexts of 2 x 2048 bits


@pytest.fixture
def halves(tmp_path: Path) -> tuple[Path, Path]:
    guest, host = tmp_path / "guest.csv", tmp_path / "host.csv"
    guest.write_text("id,y,x0,x1\n" + "".join(f"p{i},{i % 2},{i * 1.5},{1000 + i}\n" for i in range(40)))
    host.write_text("id,x0,x1\n" + "".join(f"p{i},{i % 7},\n" for i in range(20, 60)))
    return guest, host


def replace_line(path: Path, row: int, text: str) -> None:
    """Row numbers as a spreadsheet shows them: the header is row 1."""
    lines = path.read_text().splitlines()
    lines[row - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(("file", "row", "text", "message"), [
    ("guest", 4, "p2,0,3.0", "guest.csv, row 4: 3 cells where the header has 4: column 'x1' is missing"),
    ("guest", 5, "p3,1,abc,1003", "guest.csv, row 5, column 'x0': 'abc' is not a number"),
    ("host", 3, "p21,inf,", "host.csv, row 3, column 'x0': 'inf' is not a finite number"),
    ("guest", 6, "p4,2,6.0,1004", "guest.csv, row 6, column 'y': label '2' is not 0 or 1"),
    ("guest", 7, "p5,,7.5,1005", "guest.csv, row 7, column 'y': label '' is not 0 or 1"),
    ("guest", 8, "p0,0,9.0,1006", "guest.csv, row 8, column 'id': id 'p0' is also in row 2"),
    ("guest", 1, "key,y,x0,x1", "guest.csv, row 1, column 1: the first column must be 'id', not 'key'"),
    ("guest", 1, "id,label,x0,x1", "guest.csv, row 1: no 'y' column (the labels)"),
    ("host", 1, "id,y,x1", "host.csv, row 1, column 'y': the partner's half carries no labels"),
])
def test_bad_input_exits_2_naming_the_file_row_and_column(halves: tuple[Path, Path], file: str, row: int, text: str,
                                                         message: str) -> None:
    guest, host = halves
    replace_line(guest if file == "guest" else host, row, text)
    result = run("--guest", str(guest), "--host", str(host), "--plaintext")
    assert result.exit_code == 2, result.output
    assert message in result.output, result.output


def test_an_empty_intersection_is_named_and_nothing_is_trained(halves: tuple[Path, Path], tmp_path: Path) -> None:
    guest, _ = halves
    strangers = tmp_path / "strangers.csv"
    strangers.write_text("id,x0\n" + "".join(f"q{i},{i}\n" for i in range(30)))
    result = run("--guest", str(guest), "--host", str(strangers), "--plaintext")
    assert result.exit_code == 2
    assert "no id of guest.csv is in strangers.csv (column 'id'): the intersection is empty" in result.output


def test_a_missing_file_an_unknown_model_and_a_bad_fraction_exit_2(halves: tuple[Path, Path], tmp_path: Path) -> None:
    guest, host = halves
    missing = run("--guest", str(tmp_path / "nowhere.csv"), "--host", str(host))
    assert missing.exit_code == 2 and "nowhere.csv: cannot be read" in missing.output
    unknown = run("--guest", str(guest), "--host", str(host), "--model", "forest", "--plaintext")
    assert unknown.exit_code == 2 and "unknown model 'forest'; this build trains lr" in unknown.output
    fraction = run("--guest", str(guest), "--host", str(host), "--test-fraction", "1.5")
    assert fraction.exit_code == 2 and "test fraction must be between 0 and 1" in fraction.output
