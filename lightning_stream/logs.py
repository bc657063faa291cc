"""No token in any log line: ``redact()`` and a filter on the loggers that print request URLs.

Browsers' EventSource and WebSocket can only send the token in the query (``?token=``),
so every URL a server sees may carry it, and aiohttp echoes request lines in its
parser errors (``Invalid char in url query: b'GET /stream?token=...'``). Redaction
replaces the value of ``token=`` (and of ``Authorization: Bearer``) with ``REDACTED``
in the message, its arguments and the formatted traceback, before any handler sees
the record. ``install()`` puts the filter on aiohttp's loggers, asyncio's and ours that
log URLs; it is idempotent.
"""

from __future__ import annotations

import logging
import re
import traceback

__all__ = ["RedactTokens", "install", "redact"]

_SECRET = re.compile(r"(token=|bearer\s+)[^\s&#'\"\\]+", re.IGNORECASE)
_LOGGERS = (
    "aiohttp.access",
    "aiohttp.client",
    "aiohttp.internal",
    "aiohttp.server",
    "aiohttp.web",
    "aiohttp.websocket",
    "asyncio",
    "lightning_stream.app",
    "lightning_stream.client",
    "lightning_stream.connections",
    "lightning_stream.websocket",
)


def redact(text: str) -> str:
    """``text`` with every ``token=VALUE`` and ``Bearer VALUE`` turned into ``...=REDACTED``."""
    return _SECRET.sub(r"\1REDACTED", text)


class RedactTokens(logging.Filter):
    """Rewrites a record whose message or traceback holds a token; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[0] is not None:
            text = record.exc_text or "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            clean = redact(text)
            if clean != text:
                record.exc_text, record.exc_info = clean, None  # formatters print exc_text as is
        return True


_FILTER = RedactTokens()


def install() -> None:
    """Put the redacting filter on every logger that may print a request URL (idempotent)."""
    for name in _LOGGERS:
        log = logging.getLogger(name)
        if _FILTER not in log.filters:
            log.addFilter(_FILTER)
