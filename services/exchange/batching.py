"""Helpers for handlers whose batch as a whole produces messages (one PSI step for many ids)."""
from __future__ import annotations

from services.core.kafka import HandlerResult, Outbound


def attach(results: list[HandlerResult], extra: list[Outbound]) -> list[HandlerResult]:
    """Publish `extra` with the batch: on the last message that did not fail.

    If every message failed there is nothing the batch stands for, and `extra` must be empty.

    >>> attach([[], ValueError()], [])  # doctest: +ELLIPSIS
    [[], ValueError()]
    """
    if not extra:
        return results
    for index in range(len(results) - 1, -1, -1):
        result = results[index]
        if isinstance(result, list):
            results[index] = [*result, *extra]
            return results
    raise AssertionError("batch-level messages from a batch whose every message failed")
