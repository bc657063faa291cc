"""Request parameters: untrusted query strings and WebSocket fields into values, or a ``BadRequest``.

Every message says what to send instead, quoting the value with ``!r``; handlers turn a
``BadRequest`` into a JSON 400 (``security.json_error``).
"""

from __future__ import annotations

import re

from lightning_stream.globs import validate_glob
from lightning_stream.hub import FORMATS

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_LIMIT",
    "BadRequest",
    "parse_format",
    "parse_glob",
    "parse_int",
    "parse_name",
    "parse_seq",
]

MAX_LIMIT = 1_000_000
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_INT_RE = re.compile(r"[+-]?[0-9]{1,20}")  # ASCII digits only: str.isdigit() accepts '²', int() does not


class BadRequest(ValueError):
    """A client-supplied value is invalid; the message says what to send instead."""


def parse_glob(value: object, name: str) -> str:
    """A run/tag glob (``fnmatch`` syntax, the hub's rules); absent means ``*``."""
    if value is None:
        return "*"
    try:
        return validate_glob(value, name=name)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def parse_int(value: object, name: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
    """An integer in ``[minimum, maximum]`` from a query string or JSON value."""
    if isinstance(value, bool):
        raise BadRequest(f"{name}={value!r} must be an integer, not a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _INT_RE.fullmatch(value):
        number = int(value)
    else:
        raise BadRequest(f"{name}={value!r} must be an integer in [{minimum}, {maximum}]")
    if not minimum <= number <= maximum:
        raise BadRequest(f"{name}={number!r} is out of range; use an integer in [{minimum}, {maximum}]")
    return number


def parse_format(value: object, name: str = "format") -> str:
    """The payload form of a stream (``/stream?format=``, WS ``subscribe``); absent means ``points``."""
    if value is None:
        return "points"
    if value not in FORMATS:
        raise BadRequest(
            f"{name}={value!r} is not known; use {name}=columns for one column set per series, "
            f"or leave it out for point objects ({name}=points)"
        )
    assert isinstance(value, str)
    return value


def parse_seq(value: object, name: str) -> int:
    """A sequence number a client resumes from: ``Last-Event-ID``, ``last_event_id``, WS ``since``."""
    return parse_int(value, name, minimum=0, maximum=INT64_MAX)


def parse_name(value: object, name: str) -> str:
    """A required run or tag name."""
    if value is None:
        raise BadRequest(f"missing {name}=...; list runs and tags with GET /api/runs")
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{name}={value!r} must be a non-empty run or tag name; see GET /api/runs")
    return value
