"""One exception tree for Cipherstream: catch `CipherstreamError` to catch ours, nothing else.

Library errors are re-raised as ours with `raise SchemaError(...) from exc`, so a handler
can tell "this message is bad" (dead-letter it) from "this process is broken" (crash, restart).
"""
from __future__ import annotations


class CipherstreamError(Exception):
    """Base of every error Cipherstream raises on purpose."""


class ConfigError(CipherstreamError):
    """A setting is missing or invalid; the service stops at start-up."""


class UnreachableError(CipherstreamError):
    """A configured part (Kafka, Redis, SQL database) cannot be reached."""


class MessageError(CipherstreamError):
    """A message cannot be processed; it goes to the topic's dead-letter topic with this reason.

    `reason` is a short machine-readable code (it becomes a metric label), `detail` is for people.
    """

    reason: str = "invalid"

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason


class SchemaError(MessageError):
    """Bytes that do not decode under the topic's schema (wrong magic byte, unknown schema id, bad Avro)."""

    reason = "schema"


class ValidationError(MessageError):
    """A record that decodes but breaks a business rule (missing customer id, negative amount...)."""

    reason = "validation"
