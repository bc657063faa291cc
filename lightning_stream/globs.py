"""Run and tag globs: what a usable pattern is, and a filter that remembers its answers.

Shared by the hub (subscriptions, ``/api/series``), the request parameter parsing and the
OpenAPI description, so the rule is written once. Globs are matched case-sensitively with
:func:`fnmatch.fnmatchcase`; ``*`` also matches ``/``, so ``train*`` matches run
``train/version_0``.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

__all__ = ["MAX_GLOB_LEN", "GlobFilter", "validate_glob"]

MAX_GLOB_LEN = 256


def validate_glob(pattern: Any, *, name: str = "glob") -> str:
    """Return ``pattern`` if it is a usable fnmatch glob, else raise ``ValueError`` saying what to fix."""
    if not isinstance(pattern, str):
        raise ValueError(f"{name}={pattern!r} must be a string glob such as '*' or 'version_*'")
    if not pattern:
        raise ValueError(f"{name} is empty; use '*' to match everything")
    if len(pattern) > MAX_GLOB_LEN:
        raise ValueError(f"{name} is {len(pattern)} characters long; the limit is {MAX_GLOB_LEN}")
    if any(ord(c) < 32 or ord(c) == 127 for c in pattern):
        raise ValueError(f"{name}={pattern!r} contains control characters; remove them")
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                raise ValueError(
                    f"{name}={pattern!r} has an unclosed '[' at position {i - 1}; "
                    "close the set with ']', or write '[[]' to match a literal '['"
                )
            i = j + 1
    return pattern


class GlobFilter:
    """A subscription's (run, tag) globs with memoized answers."""

    __slots__ = ("_runs", "_series", "key", "match_all", "run_glob", "tag_glob")

    def __init__(self, run_glob: str, tag_glob: str) -> None:
        self.run_glob = run_glob
        self.tag_glob = tag_glob
        self.match_all = run_glob == "*" and tag_glob == "*"
        self.key: tuple[str, str] = ("*", "*") if self.match_all else (run_glob, tag_glob)
        self._series: dict[tuple[str, str], bool] = {}
        self._runs: dict[str, bool] = {}

    def series(self, run: str, tag: str) -> bool:
        if self.match_all:
            return True
        hit = self._series.get((run, tag))
        if hit is None:
            hit = self._series[(run, tag)] = self.run(run) and fnmatchcase(tag, self.tag_glob)
        return hit

    def run(self, run: str) -> bool:
        hit = self._runs.get(run)
        if hit is None:
            hit = self._runs[run] = fnmatchcase(run, self.run_glob)
        return hit
