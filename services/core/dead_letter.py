"""The dead letter: what every reader writes to a topic's dead-letter topic, with the reason."""
from __future__ import annotations

import dataclasses
from typing import ClassVar


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    SCHEMA: ClassVar[str] = "cipherstream.DeadLetter"
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    error_type: str
    detail: str
    service: str
    failed_at_ms: int
