"""The compliance matrix (docs/compliance.md) stays true: it quotes every requirement line of
../shared/design/REQUIREMENTS.md in its current words, every test, benchmark metric, file and
heading it names exists, and a row says `shown` only with a test or a benchmark behind it."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from services.core.config import REPO_ROOT

MATRIX = REPO_ROOT / "docs" / "compliance.md"
REQUIREMENTS = REPO_ROOT.parent / "shared" / "design" / "REQUIREMENTS.md"
STATUSES = ("shown", "in part", "documented", "open")

_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_REFERENCE = re.compile(r"^(?:tests|bench|docs|services|demo|ops|helm|schemas)/\S+$|^(?:Makefile|pyproject\.toml|Dockerfile)$")
_MARKDOWN_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)


def requirement_lines(text: str) -> list[str]:
    """The bullet items of REQUIREMENTS.md, each joined onto one line.

    >>> requirement_lines("# T\\n## A\\n- one\\n  more\\n- two\\n\\ntext")
    ['one more', 'two']
    """
    items: list[str] = []
    for line in text.splitlines():
        if line.startswith("- "):
            items.append(line[2:].strip())
        elif items and line.startswith("  ") and line.strip():
            items[-1] += " " + line.strip()
        elif not line.strip() and items and not items[-1].endswith("\0"):
            items[-1] += "\0"  # a blank line ends the item
    return [" ".join(item.rstrip("\0").split()) for item in items]


def quoted_lines(text: str) -> list[str]:
    """The block quotes of the matrix (one requirement each), joined onto one line.

    >>> quoted_lines("> a\\n> b\\n\\n| x |\\n> c\\n")
    ['a b', 'c']
    """
    quotes: list[str] = []
    previous_quoted = False
    for line in text.splitlines():
        if line.startswith(">"):
            body = line[1:].strip()
            if previous_quoted:
                quotes[-1] += " " + body
            else:
                quotes.append(body)
        previous_quoted = line.startswith(">")
    return [" ".join(quote.split()) for quote in quotes]


def table_rows(text: str) -> list[list[str]]:
    """Cells of every table row of the matrix but headers and separators.

    >>> table_rows("| what | shown by | status |\\n| --- | --- | --- |\\n| a | `t.py::f` | shown |")
    [['a', '`t.py::f`', 'shown']]
    """
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]
    return [row for row in rows if row[-1] != "status" and not set(row[-1]) <= {"-", " "}]


def anchor_of(heading: str) -> str:
    """GitHub's anchor for a heading.

    >>> anchor_of("BJKJ-001: masked personal numbers")
    'bjkj-001-masked-personal-numbers'
    """
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def functions_in(path: Path) -> dict[str, bool]:
    """The functions a file defines (at the top or in a class), each with whether it is a test:
    named `test_...` or carrying a doctest, which the suite runs."""
    tree = ast.parse(path.read_text())
    return {node.name: node.name.startswith("test_") or ">>>" in (ast.get_docstring(node) or "")
            for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def missing_reference(reference: str, base: Path = REPO_ROOT) -> str | None:
    """Why a reference of the matrix does not hold (None when it does).

    `tests/x.py::test_name` is a test function, `bench/results/x.json:metric` a benchmark metric,
    `docs/x.md#anchor` a heading, anything else a file.
    """
    if "::" in reference:
        file_part, function = reference.split("::", 1)
        path = base / file_part
        if not path.is_file():
            return f"{file_part} does not exist"
        return None if function in functions_in(path) else f"{file_part} has no function {function}"
    if reference.startswith("bench/results/") and ":" in reference:
        file_part, metric = reference.split(":", 1)
        path = base / file_part
        if not path.is_file():
            return f"{file_part} does not exist"
        return None if metric in json.loads(path.read_text())["metrics"] else f"{file_part} has no metric {metric}"
    file_part, _, anchor = reference.partition("#")
    path = base / file_part
    if not path.exists():
        return f"{file_part} does not exist"
    if anchor and anchor not in {anchor_of(heading) for heading in _HEADING.findall(path.read_text())}:
        return f"{file_part} has no heading #{anchor}"
    return None


def references_in(cell: str) -> list[str]:
    """The paths a matrix cell names: its code spans that look like paths, and its relative links
    (resolved from docs/).

    >>> references_in("`tests/a.py::t`, `make security`, [runbook](runbook.md#rto), `Makefile`")
    ['tests/a.py::t', 'Makefile', 'docs/runbook.md#rto']
    """
    spans = [span.strip() for span in _CODE_SPAN.findall(cell) if _REFERENCE.match(span.strip())]
    links = [target for target in _MARKDOWN_LINK.findall(_CODE_SPAN.sub("", cell)) if not re.match(r"^[a-z]+:", target)]
    return spans + [("docs/" + link if not link.startswith("#") else "docs/compliance.md" + link) for link in links]


def is_evidence(reference: str, base: Path = REPO_ROOT) -> bool:
    """A test (a `test_` function or one with a doctest) or a benchmark metric: what a `shown` row
    needs at least one of."""
    if "::" in reference:
        file_part, function = reference.split("::", 1)
        return functions_in(base / file_part).get(function, False)
    return reference.startswith("bench/results/") and ":" in reference


def test_every_requirement_line_is_quoted_in_the_matrix_in_its_current_words() -> None:
    assert REQUIREMENTS.is_file(), f"{REQUIREMENTS} is missing: the matrix is checked against it (CI checks out ../shared)"
    requirements = requirement_lines(REQUIREMENTS.read_text())
    assert len(requirements) > 30
    quotes = quoted_lines(MATRIX.read_text())
    assert [line for line in requirements if line not in quotes] == []
    assert [quote for quote in quotes if quote not in requirements] == [], "quoted words that are no requirement (any more)"


def test_every_reference_of_the_matrix_exists() -> None:
    rows = table_rows(MATRIX.read_text())
    references = [reference for row in rows for cell in row for reference in references_in(cell)]
    assert len(references) > 50
    assert [(reference, why) for reference in references if (why := missing_reference(reference))] == []


def test_every_row_has_a_status_and_a_shown_row_has_a_test_or_benchmark() -> None:
    rows = table_rows(MATRIX.read_text())
    assert [row for row in rows if not row[-1].startswith(STATUSES)] == []
    evidence_free = [row[0] for row in rows if row[-1].startswith("shown")
                     and not any(is_evidence(reference) for cell in row[:-1] for reference in references_in(cell))]
    assert evidence_free == []
    unexplained = [row[0] for row in rows if row[-1].startswith("open") and ":" not in row[-1]]
    assert unexplained == [], "an open row says what is missing and which issue covers it"


def test_the_checks_catch_a_renamed_test_a_lost_metric_and_a_dropped_requirement(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("def test_kept():\n    pass\n\ndef helper():\n    pass\n")
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "bench" / "results" / "x.json").write_text(json.dumps({"metrics": {"kept_per_s": 1.0}}))
    assert missing_reference("tests/test_a.py::test_kept", tmp_path) is None
    assert is_evidence("tests/test_a.py::test_kept", tmp_path) and not is_evidence("tests/test_a.py::helper", tmp_path)
    assert missing_reference("tests/test_a.py::test_renamed", tmp_path) == "tests/test_a.py has no function test_renamed"
    assert missing_reference("tests/test_gone.py::test_kept", tmp_path) == "tests/test_gone.py does not exist"
    assert missing_reference("bench/results/x.json:kept_per_s", tmp_path) is None
    assert missing_reference("bench/results/x.json:lost_per_s", tmp_path) == "bench/results/x.json has no metric lost_per_s"
    requirements = requirement_lines("- first item\n  goes on\n- second item\n")
    assert [line for line in requirements if line not in quoted_lines("> first item goes on\n")] == ["second item"]

