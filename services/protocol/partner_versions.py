"""The labels of the partner's half of a federated model, which both parties read.

A training run labels its partner half (`fedlr.<product>@<run>`); online learning moves that half
one window of responses at a time, and each window applied gets the label `<run label>#w<window>`.
The run label is the half's lineage: every partial score carries its label, and scoring pairs the
bank's half with partial scores of the same lineage (a window behind is expected right after a
window, until the partner's new scores have arrived).

>>> online_version("fedlr.travel@ab12", 3)
'fedlr.travel@ab12#w3'
>>> lineage_of("fedlr.travel@ab12#w3"), window_of("fedlr.travel@ab12#w3"), window_of("fedlr.travel@ab12")
('fedlr.travel@ab12', 3, 0)
>>> same_lineage("fedlr.travel@ab12#w2", "fedlr.travel@ab12"), same_lineage("fedlr.travel@cd34", "fedlr.travel@ab12")
(True, False)
"""
from __future__ import annotations

WINDOW_MARK = "#w"


def online_version(lineage: str, window: int) -> str:
    """The label of the partner half after `window` windows of online learning on top of `lineage`."""
    return f"{lineage}{WINDOW_MARK}{window}"


def lineage_of(version: str) -> str:
    return version.split(WINDOW_MARK, 1)[0]


def window_of(version: str) -> int:
    """How many online windows the labelled half has applied (0: as its training run left it)."""
    _, _, window = version.partition(WINDOW_MARK)
    return int(window) if window.isdigit() else 0


def same_lineage(version: str, other: str) -> bool:
    return lineage_of(version) == lineage_of(other)
