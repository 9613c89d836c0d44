"""The table of exchange message kinds: every cross-party message class in it once, every kind
with a sender, a receiver and what the receiver learns; the docs' protocol tables are its render
and no other copy of a who-sends-what table is kept."""
from __future__ import annotations

from services.core.config import REPO_ROOT
from services.protocol.exchange_messages import EXCHANGE_MESSAGE_TYPES, TrainingStart
from services.protocol.kinds import GENERATED_BLOCK, KINDS, PROTOCOLS, kind_named, kind_of, render_tables_in


def test_every_message_class_is_carried_by_exactly_one_kind() -> None:
    carried = [kind.message for kind in KINDS]
    assert len(carried) == len(set(carried))
    # TrainingStart crosses inside TrainingRun (fedlr_start); every other class is a kind of its own.
    assert set(carried) == set(EXCHANGE_MESSAGE_TYPES) - {TrainingStart}
    assert all(kind_of(kind.message) is kind and kind_named(kind.name) is kind for kind in KINDS)


def test_every_kind_says_who_sends_it_and_what_its_receiver_learns() -> None:
    assert len({kind.name for kind in KINDS}) == len(KINDS)
    for kind in KINDS:
        assert kind.protocol in PROTOCOLS and kind.name.startswith(("psi_", "score_", "partial_", "fedlr_", "sbt_"))
        assert (kind.sender in ("bank", "partner", "either") and kind.receiver != kind.sender) or kind.sender == "either"
        assert kind.carries and kind.receiver_learns
        assert kind.malformed_reason in ("bad_psi_message", "bad_score_request", "bad_partial_scores",
                                         "bad_fedlr_message", "bad_sbt_message")
    # The partner never sends a training step the bank drives, and only the bank opens a PSI session.
    assert {kind.name for kind in KINDS if kind.sender == "partner"} == {
        "partial_scores", "fedlr_scores", "fedlr_masked", "sbt_decisions", "sbt_histograms", "sbt_split_rows"}
    assert kind_named("psi_session").may_send("bank") and not kind_named("psi_session").may_send("partner")


def _who_sends_what_tables_outside_generated_blocks(text: str) -> list[str]:
    """Header rows of markdown tables with a `from -> to` column that are not a rendered block."""
    outside = GENERATED_BLOCK.sub("", text)
    return [line.strip() for line in outside.splitlines()
            if line.lstrip().startswith("|") and "from -> to" in line]


def _documents() -> dict[str, str]:
    paths = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")),
             *sorted((REPO_ROOT / "services").rglob("*.py"))]
    return {str(path.relative_to(REPO_ROOT)): path.read_text() for path in paths}


PROTOCOLS_PAGE = REPO_ROOT / "docs" / "protocols.md"


def test_the_protocol_tables_are_the_render_of_the_kinds_table() -> None:
    readme = PROTOCOLS_PAGE.read_text()
    blocks = [match.group(2) for match in GENERATED_BLOCK.finditer(readme)]
    assert sorted(blocks) == sorted(PROTOCOLS), blocks
    assert readme == render_tables_in(readme), "run `python -m tests.protocol.test_kinds` to render the tables"


def test_no_other_copy_of_a_who_sends_what_table_is_kept_in_the_docs_or_the_code() -> None:
    copies = {name: tables for name, text in _documents().items()
              if (tables := _who_sends_what_tables_outside_generated_blocks(text))}
    assert copies == {}, "keep one copy: the tables rendered from services/protocol/kinds.py"
    # The check would see one: an old-style table in a docstring.
    assert _who_sends_what_tables_outside_generated_blocks(
        '"""\n| step | from -> to | message |\n| --- | --- | --- |\n"""') == ["| step | from -> to | message |"]


if __name__ == "__main__":  # rewrite docs/protocols.md's tables from the kinds table
    PROTOCOLS_PAGE.write_text(render_tables_in(PROTOCOLS_PAGE.read_text()))
