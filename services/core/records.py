"""Dataclass messages to and from the plain dicts fastavro reads and writes.

Fields holding a dataclass become nested records, tuples become lists (and back).

>>> from services.core.dead_letter import DeadLetter
>>> letter = DeadLetter("t", 0, 1, None, b"x", "bad", "ValueError", "d", "ingest", 5)
>>> from_record(DeadLetter, to_record(letter)) == letter
True
"""
from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable
from typing import Any, TypeVar

M = TypeVar("M")


@functools.cache
def _nested_fields(cls: type[Any]) -> dict[str, tuple[str, type[Any]]]:
    """Which fields hold a nested record ('one'), a sequence of records ('many') or of plain values
    ('tuple'), and of what class."""
    nested: dict[str, tuple[str, type[Any]]] = {}
    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            nested[name] = ("one", hint)  # type: ignore[assignment]
        elif typing.get_origin(hint) is tuple:
            item = typing.get_args(hint)[0]
            nested[name] = ("many", item) if dataclasses.is_dataclass(item) else ("tuple", item)
    return nested


# The converters below are generated once per message class, as `dataclasses` generates
# __init__: on the hot path a generic field loop cost 25 us per CustomerScores each way,
# the generated code about a fifth of that.

@functools.cache
def _record_writer(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
    nested = _nested_fields(cls)
    items, namespace = [], {}
    for field in dataclasses.fields(cls):
        kind, item_cls = nested.get(field.name, ("plain", object))
        value = f"message.{field.name}"
        if kind == "one":
            namespace[f"w_{field.name}"] = _record_writer(item_cls)
            value = f"w_{field.name}({value})"
        elif kind == "many":
            namespace[f"w_{field.name}"] = _record_writer(item_cls)
            value = f"[w_{field.name}(item) for item in {value}]"
        elif kind == "tuple":
            value = f"list({value})"
        items.append(f"{field.name!r}: {value}")
    source = f"def to_record(message):\n    return {{{', '.join(items)}}}\n"
    exec(source, namespace)  # nosec B102  # source built from dataclass field names
    writer: Callable[[Any], dict[str, Any]] = namespace["to_record"]
    return writer


@functools.cache
def _record_reader(cls: type[Any]) -> Callable[[dict[str, Any]], Any]:
    nested = _nested_fields(cls)
    arguments, namespace = [], {"cls": cls}
    for field in dataclasses.fields(cls):
        kind, item_cls = nested.get(field.name, ("plain", object))
        value = f"record[{field.name!r}]"
        if kind == "one":
            namespace[f"r_{field.name}"] = _record_reader(item_cls)
            value = f"r_{field.name}({value})"
        elif kind == "many":
            namespace[f"r_{field.name}"] = _record_reader(item_cls)
            value = f"tuple([r_{field.name}(item) for item in {value}])"
        elif kind == "tuple":
            value = f"tuple({value})"
        arguments.append(value)
    source = f"def from_record(record):\n    return cls({', '.join(arguments)})\n"
    exec(source, namespace)  # nosec B102  # source built from dataclass field names
    reader: Callable[[dict[str, Any]], Any] = namespace["from_record"]
    return reader


def to_record(message: Any) -> dict[str, Any]:
    """A message as the plain dict fastavro writes.

    """
    return _record_writer(type(message))(message)


def from_record(cls: type[M], record: dict[str, Any]) -> M:
    """Build a message from the dict fastavro reads (lists become tuples, nested dicts records).

    """
    message: M = _record_reader(cls)(record)
    return message
