"""The documentation stays true to the tree: no dead relative link, every docs page reachable from
the README, a README for every service, and the README's service and topic tables matching each
service's topics.py and the catalog."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from services.core.config import REPO_ROOT
from services.protocol.catalog import CHANNELS, TOPICS, offers_topic

README = REPO_ROOT / "README.md"
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
PACKAGE_READMES = sorted((REPO_ROOT / "services").glob("**/README.md"))
SERVICES = sorted(path.parent.name for path in (REPO_ROOT / "services").glob("*/app.py"))
PACKAGES = ("protocol", "core", "crypto", "models")

_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)


def links_in(text: str) -> list[str]:
    """Targets of the inline links in markdown, outside code blocks and code spans.

    >>> links_in("see [a](docs/a.md#x) and `[b](nope.md)`\\n```\\n[c](no.md)\\n```\\n[d](https://e.org)")
    ['docs/a.md#x', 'https://e.org']
    """
    return _LINK.findall(_CODE_SPAN.sub("", _FENCE.sub("", text)))


def anchor_of(heading: str) -> str:
    """GitHub's anchor for a heading.

    >>> anchor_of("RTO and RPO (measured)"), anchor_of("`make bench`: Running them")
    ('rto-and-rpo-measured', 'make-bench-running-them')
    """
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def anchors_in(path: Path) -> set[str]:
    return {anchor_of(heading) for heading in _HEADING.findall(_FENCE.sub("", path.read_text()))}


def dead_links(path: Path) -> list[str]:
    """Relative links of a markdown file whose file (or heading anchor) does not exist."""
    dead = []
    for target in links_in(path.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors_in(linked)):
            dead.append(target)
    return dead


def test_the_link_check_finds_a_dead_file_and_a_dead_anchor(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# There\n\n## A heading\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md#a-heading) [gone](missing.md) [bad anchor](there.md#nope) [self](#page)\n# Page\n")
    assert dead_links(page) == ["missing.md", "there.md#nope"]


@pytest.mark.parametrize("path", [README, *DOCS, *PACKAGE_READMES], ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_no_relative_link_is_dead(path: Path) -> None:
    assert dead_links(path) == []


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    reached, todo = set(), [README.resolve()]
    while todo:
        page = todo.pop()
        if page in reached or page.suffix != ".md" or not page.exists():
            continue
        reached.add(page)
        todo += [(page.parent / target.partition("#")[0]).resolve() for target in links_in(page.read_text())
                 if not re.match(r"^[a-z][a-z0-9+.-]*:", target) and target.partition("#")[0]]
    assert [str(page.relative_to(REPO_ROOT)) for page in DOCS if page.resolve() not in reached] == []


def test_every_service_and_contract_package_has_a_readme() -> None:
    assert SERVICES, "no services/*/app.py found"
    missing = [name for name in (*SERVICES, *PACKAGES) if not (REPO_ROOT / "services" / name / "README.md").exists()]
    assert missing == []


def _table_rows(text: str, first_cell: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith(f"| {first_cell}")]


def _topics_named(cell: str) -> set[str]:
    names = set(re.findall(r"`([a-z][a-z0-9_.<>-]*)`", cell))
    if "offers.<channel>" in names:
        names = (names - {"offers.<channel>"}) | {offers_topic(channel) for channel in CHANNELS}
    return {name for name in names if name in TOPICS}


@pytest.mark.parametrize("service", SERVICES)
def test_the_readme_services_table_lists_what_each_service_reads_and_writes(service: str) -> None:
    rows = _table_rows(README.read_text(), f"[{service}](services/{service}/README.md)")
    assert len(rows) == 1, f"README's services table has no single row for {service}"
    _, _, reads, writes, *_ = rows[0]
    uses = importlib.import_module(f"services.{service}.topics").USES
    assert _topics_named(reads) == {use.name for use in uses if use.direction == "reads"}
    assert _topics_named(writes) == {use.name for use in uses if use.direction == "writes"}


def test_the_readme_topics_table_names_every_topic_of_the_catalog_with_its_owner() -> None:
    rows = [row for row in _table_rows(README.read_text(), "`") if len(row) >= 3]
    owners = {name: row[1] for row in rows for name in _topics_named(row[0])}
    expected = {name: spec.owner for name, spec in TOPICS.items() if not name.startswith("dlq.")}
    assert owners == expected
    assert any(row[0].startswith("`dlq.<topic>`") for row in rows)
