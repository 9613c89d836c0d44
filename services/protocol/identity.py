"""The identity both parties align on, written once for both.

Each party normalises the national ids it holds the same way (`NationalId`: 6 to 32 letters
and digits, upper-cased) and hashes them (`id_hash`); PSI aligns on the hashes, so no raw
national id is kept after ingest on either side.
"""
from __future__ import annotations

import hashlib
from typing import Annotated

from pydantic import StringConstraints

NationalId = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z]{6,32}$", to_upper=True)]
"""A national id as both parties' feeds must carry it; pydantic upper-cases it on validation."""

JOIN_ID_BYTES = 16
"""A PSI join id: 16 bytes (32 hex characters), the same on both sides, different per session."""


def id_hash(national_id: str) -> str:
    """The identity both parties align on: the same normalised national id gives the same hash.

    >>> id_hash("11010519491231002X")[:12]
    '426695a0efdb'
    """
    return hashlib.sha256(national_id.encode()).hexdigest()
