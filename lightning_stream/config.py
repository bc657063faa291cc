"""Validated server configuration, with the ``LIGHTNING_STREAM_*`` environment.

Every knob of a server lives in one frozen ``ServerConfig``; it is checked
when built, so a bad value fails in the caller's thread with a message that
names the argument and the fix, never later inside the server thread.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENV_HOST = "LIGHTNING_STREAM_HOST"
ENV_PORT = "LIGHTNING_STREAM_PORT"
ENV_TOKEN = "LIGHTNING_STREAM_TOKEN"
ENV_REGISTRY_DIR = "LIGHTNING_STREAM_REGISTRY_DIR"

DEFAULT_HOST = "127.0.0.1"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and any 127.0.0.0/8 or ::1 address (brackets allowed)."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    """True for an all-interfaces bind (``0.0.0.0``, ``::``, or empty), brackets allowed."""
    return host.strip().strip("[]") in ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class ServerConfig:
    """How one stream server binds, authenticates and bounds its memory.

    Args:
        host: address to bind; loopback by default. Any other address needs ``token``.
        port: TCP port; ``None`` (or 0) picks a free one.
        strict_port: with a fixed ``port`` that is busy, raise ``PortInUseError``
            instead of falling back to a free port.
        token: bearer token required on every route but ``/health``.
        cors_origins: origins allowed cross-origin access; none by default.
        memory_budget_bytes: points held in memory, all series together; past it,
            old points are decimated (min/max per bucket, newest always kept).
        replay_points: points kept in the replay buffer for reconnecting clients.
        tick_s: how long points are coalesced before a batch goes out.
        subscriber_queue: batches a client may fall behind before it gets ``reset``.
        keepalive_s: idle interval between SSE keep-alive comments / WS pings.
        ws_max_msg_size: largest WebSocket message accepted from a client, bytes.
        poll_interval_s: longest wait between two checks of a watched logdir
            when no file-system event arrives (adaptive below that).
        registry: publish the server in the port registry.
        watchdog_interval_s: how often the health watchdog checks the server; 0 disables it.
        header_timeout_s: a connection must send a whole request within this many seconds
            of connecting (or of its previous answer), else it is closed; started SSE
            streams and WebSockets are exempt (``connections.py``).
        max_clients: connections served at once; past it a client gets ``503`` with
            ``Retry-After``. ``None``: half the soft ``RLIMIT_NOFILE``.
        isolated: serve from a child process (``isolated.py``) instead of a thread of this
            one, so serving never competes with the caller (training) for the GIL.
            ``StreamCallback`` turns it on; a manager reuses a running server either way.
    """

    host: str = DEFAULT_HOST
    port: int | None = None
    strict_port: bool = False
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    memory_budget_bytes: int = 128 * 1024 * 1024
    replay_points: int = 200_000
    tick_s: float = 0.005
    subscriber_queue: int = 512
    keepalive_s: float = 15.0
    ws_max_msg_size: int = 64 * 1024
    poll_interval_s: float = 1.0
    registry: bool = True
    watchdog_interval_s: float = 2.0
    isolated: bool = False
    header_timeout_s: float = 10.0
    max_clients: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError(f"host={self.host!r} is not an address; use e.g. '127.0.0.1' or '0.0.0.0'")
        if self.port == 0:
            object.__setattr__(self, "port", None)
        if self.port is not None:
            if isinstance(self.port, bool) or not isinstance(self.port, int):
                raise TypeError(f"port={self.port!r} must be an int in 1..65535 or None for a free port")
            if not 1 <= self.port <= 65535:
                raise ValueError(f"port={self.port!r} is out of range; use 1..65535, or None for a free port")
        if self.strict_port and self.port is None:
            raise ValueError("strict_port=True needs a fixed port; pass port=N or drop strict_port")
        if self.token is not None and (not isinstance(self.token, str) or len(self.token) < 8):
            raise ValueError(
                "token must be a string of at least 8 characters; e.g. python -c 'import secrets; print(secrets.token_urlsafe())'"
            )
        if not is_loopback(self.host) and not self.token:
            raise ValueError(
                f"host={self.host!r} is not loopback, so anyone on the network could read the run; "
                f"pass token=... (or set {ENV_TOKEN}), or bind host='127.0.0.1'"
            )
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))
        _positive(self, "memory_budget_bytes", minimum=1024 * 1024)
        _positive(self, "replay_points", minimum=1)
        _positive(self, "subscriber_queue", minimum=1)
        _positive(self, "ws_max_msg_size", minimum=1024)
        if self.max_clients is not None:
            _positive(self, "max_clients", minimum=1)
        for name in ("tick_s", "keepalive_s", "poll_interval_s", "header_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value <= 3600:
                raise ValueError(f"{name}={value!r} must be a number of seconds in (0, 3600]")
        if not isinstance(self.isolated, bool):
            raise TypeError(f"isolated={self.isolated!r} must be True (a child process serves) or False (a thread)")
        if not isinstance(self.watchdog_interval_s, (int, float)) or not 0 <= self.watchdog_interval_s <= 3600:
            raise ValueError(
                f"watchdog_interval_s={self.watchdog_interval_s!r} must be in [0, 3600]; 0 disables the watchdog"
            )

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def replace(self, **changes: Any) -> ServerConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServerConfig:
        """Defaults, then ``LIGHTNING_STREAM_HOST/PORT/TOKEN``, then ``overrides`` (None = unset)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if env.get(ENV_HOST):
            values["host"] = env[ENV_HOST]
        if env.get(ENV_PORT):
            raw = env[ENV_PORT]
            try:
                values["port"] = int(raw)
            except ValueError:
                raise ValueError(f"{ENV_PORT}={raw!r} is not a port number; unset it or use 1..65535") from None
        if env.get(ENV_TOKEN):
            values["token"] = env[ENV_TOKEN]
        known = {f.name for f in dataclasses.fields(cls)}
        for name, value in overrides.items():
            if name not in known:
                raise TypeError(f"unknown server option {name!r}; valid options: {', '.join(sorted(known))}")
            if value is not None:
                values[name] = value
        return cls(**values)


def _positive(config: ServerConfig, name: str, *, minimum: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an int >= {minimum}")
