"""JSON logs on stdout with service, severity and trace id; personal numbers masked.

Log pseudonymous ids only. Phone, id and card numbers that must appear go through `mask()`.
The personal-data audit trail is a separate stream (the console's audit log), not these logs.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from opentelemetry import trace

_DIGIT_RUN = re.compile(r"\d{7,}")


def mask(value: str) -> str:
    """Mask a phone, id or card number, keeping the first three and last four digits.

    >>> mask("13812345678")
    '138****5678'
    >>> mask("6222021234567890123")
    '622************0123'
    >>> mask("12345")
    '*****'
    """
    if len(value) <= 7:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


def mask_digits_in(text: str) -> str:
    """Mask every run of 7+ digits in free text, so a stray number never reaches the logs.

    >>> mask_digits_in("call 13812345678 now")
    'call 138****5678 now'
    """
    return _DIGIT_RUN.sub(lambda match: mask(match.group(0)), text)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        span_context = trace.get_current_span().get_span_context()
        document: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "severity": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": mask_digits_in(record.getMessage()),
        }
        if span_context.is_valid:
            document["trace_id"] = format(span_context.trace_id, "032x")
        facts = getattr(record, "facts", None)
        if facts:
            document.update({key: value if isinstance(value, (int, float, bool)) else mask_digits_in(str(value))
                             for key, value in facts.items()})
        if record.exc_info:
            document["exception"] = mask_digits_in(self.formatException(record.exc_info))
        return json.dumps(document)


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def facts(**values: Any) -> dict[str, Any]:
    """key=value facts for a log line: `log.info("batch done", extra=facts(events=12))`."""
    return {"facts": values}
