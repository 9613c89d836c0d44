"""Personal numbers (JR/T 0171): phone, national id and card numbers, found and masked.

One set of patterns for everything: the console masks every response body, page, export and log
line with `mask_personal_numbers`, and the tests (and the attack tests) scan what the console
wrote with `find_unmasked`, so what is masked and what is checked cannot drift apart.

A number counts when it stands alone: not inside a longer run of digits, a decimal number
(`0.1381234567890`) or a lowercase hex string (the audit chain's SHA-256 hashes). Phones and
cards may carry single spaces or dashes (`138 1234 5678`, `6222-0212-3456-7890`). Masking keeps
the first three and last four characters (`138****5678`), as `core.logs.mask` does.

>>> mask_personal_numbers("call 13812345678, id 11010519491231002X, card 6222 0212 3456 7890")
'call 138****5678, id 110***********002X, card 622*********7890'
>>> find_unmasked("hash 9f86d081884c7d659a2feaa0c55ad015 at 2024-06-01T10:00:00Z, p=0.13812345678901")
[]
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from services.core.logs import mask

# Not glued to a digit, a decimal point before digits, or lowercase hex (hashes, ids).
_BEFORE = r"(?<![0-9a-f])(?<!\d\.)"
_AFTER = r"(?![0-9a-f])(?!\.\d)"
NATIONAL_ID = re.compile(_BEFORE + r"(?:\d{17}[\dXx]|\d{15})(?![0-9a-fA-Z])(?!\.\d)")
"""A mainland resident id: 18 characters (17 digits and a digit or X) or the old 15 digits."""
CARD_NUMBER = re.compile(_BEFORE + r"\d(?:[ -]?\d){12,18}" + _AFTER)
"""A payment card number: 13 to 19 digits, optionally in groups."""
PHONE_NUMBER = re.compile(_BEFORE + r"(?:\+?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}" + _AFTER)
"""A mainland mobile number: 11 digits starting 13-19, optionally +86 and groups."""
PATTERNS: tuple[re.Pattern[str], ...] = (NATIONAL_ID, CARD_NUMBER, PHONE_NUMBER)
PERSONAL_NUMBER = re.compile("|".join(f"(?:{pattern.pattern})" for pattern in PATTERNS))
"""Any of them, the first that fits at each place, so one number is found (and kept or masked) once."""
_SEPARATORS = re.compile(r"[ +-]")


def normalised(number: str) -> str:
    """The number as stored: its digits (and X), without spaces, dashes or a plus.

    >>> normalised("+86 138-1234-5678")
    '8613812345678'
    """
    return _SEPARATORS.sub("", number)


def mask_personal_numbers(text: str, keep: Iterable[str] = ()) -> str:
    """Mask every phone, national id and card number in free text, except the ones in `keep`
    (the one value a re-authenticated user asked to see, for that response only).

    >>> mask_personal_numbers("13812345678 and 13987654321", keep={"13987654321"})
    '138****5678 and 13987654321'
    >>> mask_personal_numbers("id 11010519491231002X", keep={"11010519491231002X"})
    'id 11010519491231002X'
    """
    kept = frozenset(normalised(value) for value in keep)

    def masked(match: re.Match[str]) -> str:
        digits = normalised(match.group(0))
        return match.group(0) if digits in kept else mask(digits)

    return PERSONAL_NUMBER.sub(masked, text)


def find_unmasked(text: str) -> list[str]:
    """Every phone, national id or card number in `text` that is not masked (the scanners' check).

    >>> find_unmasked("138****5678 is masked, 13812345678 is not")
    ['13812345678']
    """
    return [match.group(0) for match in PERSONAL_NUMBER.finditer(text)]


class PersonalNumberFilter(logging.Filter):
    """Masks personal numbers in a log record's message and facts before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = mask_personal_numbers(record.getMessage()), None
        facts = getattr(record, "facts", None)
        if isinstance(facts, dict):
            record.facts = {key: value if isinstance(value, (int, float, bool)) else mask_personal_numbers(str(value))
                            for key, value in facts.items()}
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Put the filter on every handler of the logger (the root's by default): records that
    propagate from child loggers pass handler filters, not the root logger's own."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(existing, PersonalNumberFilter) for existing in handler.filters):
            handler.addFilter(PersonalNumberFilter())
