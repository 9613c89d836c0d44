"""Checks shared by every reader of JSON feeds (the bank's CDC feed, the partner's feature feed)."""
from __future__ import annotations

from typing import Any


def iso_text(value: Any) -> Any:
    """Dates and times arrive as ISO 8601 text; a bare number would be read as seconds since 1970.

    >>> iso_text("2026-12-01T10:00:00Z")
    '2026-12-01T10:00:00Z'
    """
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 string, got {type(value).__name__}")
    if not value[:1].isdigit() or len(value) < 10 or value[4:5] != "-":
        raise ValueError(f"{value[:40]!r} is not an ISO 8601 date")
    return value
