"""Everything that judges what a client sends: Host/Origin/token rules, CORS, and parameters.

Rules (SPEC "Environment"), applied by one middleware in this order:

1. CORS preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from an
   origin in ``config.cors_origins`` is answered ``204``; from any other origin
   ``403``. CORS headers are only ever sent to origins in ``cors_origins``.
2. Bound to loopback, a request whose ``Host`` is not a loopback name or address
   gets ``421``: that is how a DNS-rebinding page (``evil.example`` resolving to
   127.0.0.1) shows itself. Without a ``Host`` header (HTTP/1.0) the request is
   allowed: no browser sends one.
3. A WebSocket upgrade whose ``Origin`` is foreign gets ``403``. Allowed: no
   ``Origin`` (scripts), the same ``host:port`` as ``Host``, any loopback origin,
   and ``config.cors_origins``. (Browsers do not apply CORS to WebSockets, so this
   check is the only thing stopping a foreign page from reading the stream.)
4. With ``config.token``, every route but ``/health`` and the static assets needs
   ``Authorization: Bearer TOKEN`` or ``?token=TOKEN`` (browsers' EventSource and
   WebSocket cannot set headers), compared with ``hmac.compare_digest``. A
   missing or wrong token is ``401``.

The parameter helpers at the end turn untrusted query strings and WebSocket
fields into values or a ``BadRequest`` that says what to fix.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from yarl import URL

from lightning_stream.config import ServerConfig, is_loopback
from lightning_stream.hub import FORMATS, validate_glob

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: paths reachable without the token: liveness probes and the package's own static files
PUBLIC_PATHS = frozenset({"/health", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)

MAX_LIMIT = 1_000_000
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_CORS_ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID"
_INT_RE = re.compile(r"[+-]?[0-9]{1,20}")  # ASCII digits only: str.isdigit() accepts '²', int() does not


class BadRequest(ValueError):
    """A client-supplied value is invalid; the message says what to send instead."""


def json_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """The one shape of every error answer: ``{"error": message}``."""
    return web.json_response({"error": message}, status=status, headers=headers)


def host_name(host_header: str) -> str:
    """The name part of a ``Host`` header: ``[::1]:8080`` → ``::1``, ``Localhost.:80`` → ``localhost``."""
    value = host_header.strip()
    if value.startswith("["):
        end = value.find("]")
        name = value[1:end] if end > 0 else value[1:]
    elif value.count(":") == 1:
        name = value.split(":", 1)[0]
    else:
        name = value  # bare name, or a bare IPv6 address (invalid in Host, but judge it anyway)
    return name.rstrip(".").lower()


def host_is_loopback(host_header: str) -> bool:
    name = host_name(host_header)
    return bool(name) and is_loopback(name)


def origin_allowed(origin: str, host_header: str | None, config: ServerConfig) -> bool:
    """Whether a browser page from ``origin`` may open a WebSocket to this server."""
    if origin in config.cors_origins:
        return True
    try:
        url = URL(origin)
    except ValueError:
        return False
    if url.scheme not in ("http", "https") or not url.host:
        return False  # "null" (sandboxed iframes, file://) and other schemes
    if is_loopback(url.host):
        return True
    if host_header is None:
        return False
    origin_hostport = url.raw_authority.lower()
    return origin_hostport == host_header.strip().lower()


def token_ok(request: web.Request, token: str) -> bool:
    """``Authorization: Bearer TOKEN`` or ``?token=TOKEN``, compared in constant time."""
    expected = token.encode()
    auth = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), expected):
        return True
    given = request.query.get("token")
    return given is not None and hmac.compare_digest(given.encode(), expected)


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _cors_headers(origin: str) -> dict[str, str]:
    return {
        hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
        hdrs.ACCESS_CONTROL_ALLOW_HEADERS: _CORS_ALLOW_HEADERS,
        hdrs.ACCESS_CONTROL_ALLOW_METHODS: "GET, OPTIONS",
        hdrs.ACCESS_CONTROL_MAX_AGE: "600",
        hdrs.VARY: "Origin",
    }


def security_middleware(config: ServerConfig) -> Middleware:
    """The aiohttp middleware applying the module's rules for ``config``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        host = request.headers.get(hdrs.HOST)
        cors_ok = origin is not None and origin in config.cors_origins

        if request.method == hdrs.METH_OPTIONS and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers:
            if not cors_ok:
                return json_error(
                    403,
                    f"cross-origin requests from {origin!r} are not allowed; "
                    "start the server with cors_origins=(ORIGIN,) to allow them",
                )
            return web.Response(status=204, headers=_cors_headers(origin or ""))

        if config.loopback and host is not None and not host_is_loopback(host):
            return json_error(
                421,
                f"Host {host!r} is not a loopback name; this server is bound to {config.host!r} and only "
                "answers to localhost/127.0.0.1/[::1] (protection against DNS rebinding); "
                "open it as http://127.0.0.1:PORT/",
            )

        upgrade = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        if upgrade and origin is not None and not origin_allowed(origin, host, config):
            return json_error(
                403,
                f"WebSocket from Origin {origin!r} refused: only the server's own pages, loopback origins "
                "and configured cors_origins may connect",
            )

        if config.token is not None and not _is_public(request.path) and not token_ok(request, config.token):
            return json_error(
                401,
                "this server needs a token: send 'Authorization: Bearer TOKEN' or add '?token=TOKEN' to the URL",
                headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="lightning-stream"'},
            )

        response = await handler(request)
        if cors_ok and origin is not None and not response.prepared:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            response.headers[hdrs.VARY] = "Origin"
        return response

    return middleware


def cors_headers_for(request: web.Request, config: ServerConfig) -> dict[str, str]:
    """Headers to add before a streaming response is prepared (the middleware is too late then)."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and origin in config.cors_origins:
        return {hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin, hdrs.VARY: "Origin"}
    return {}


# -- parameters ------------------------------------------------------------------------------------


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
