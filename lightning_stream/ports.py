"""Binding the server's listening socket: fixed ports, dynamic ports, busy ports.

We create and bind the socket ourselves and hand it to ``aiohttp.web.SockSite``, so
the port a server reports is read back from the bound socket, never assumed.

* ``port=None``: ``portpicker.pick_unused_port()`` picks (it honours a
  ``PORTSERVER_ADDRESS`` port server, as on shared CI farms), then we bind. Another
  process may take the port between pick and bind; then we pick again (bounded
  tries) and, as a last resort, let the kernel choose (port 0). Never probe-then-sleep.
* A fixed port that is busy: ``PortInUseError`` with ``strict_port=True``; otherwise
  a dynamic port and a warning naming the holder when the registry knows it.

Socket options, per platform:

* POSIX: ``SO_REUSEADDR``, so a port whose previous server just closed (connections in
  TIME_WAIT) can be bound again at once. It does *not* let two live listeners share a
  port; that is ``SO_REUSEPORT``, which we never set (two servers would silently split
  the connections between them).
* Windows: ``SO_REUSEADDR`` means "steal a bound port", so we set ``SO_EXCLUSIVEADDRUSE``
  instead; TIME_WAIT does not block a re-bind there. A busy port reports
  ``WSAEADDRINUSE`` (10048, the seed's ``[Errno 10048]``) or ``WSAEACCES`` (10013).
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
from dataclasses import dataclass

import portpicker

from lightning_stream.errors import PortInUseError, ServerStartError
from lightning_stream.registry import find_holder

logger = logging.getLogger(__name__)

PICK_TRIES = 8
BACKLOG = 128

_WINDOWS = sys.platform == "win32"
_IN_USE_ERRNOS = frozenset({errno.EADDRINUSE, 10048, 10013} if _WINDOWS else {errno.EADDRINUSE})


@dataclass(frozen=True)
class BoundSocket:
    """A listening socket and how it came to be.

    ``requested_port`` is what the caller asked for (None = dynamic); ``message`` is
    the fallback warning when a fixed port was busy, else empty.
    """

    sock: socket.socket
    host: str
    port: int
    requested_port: int | None
    message: str = ""

    @property
    def fell_back(self) -> bool:
        return self.requested_port is not None and self.port != self.requested_port


def is_in_use(exc: OSError) -> bool:
    """True for "address already in use" on any platform."""
    return exc.errno in _IN_USE_ERRNOS or getattr(exc, "winerror", None) in (10048, 10013)


def bind_listener(host: str, port: int) -> socket.socket:
    """Bind and listen on (host, port); ``port=0`` lets the kernel pick. Raises ``OSError``."""
    family, address = _resolve(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if _WINDOWS:  # pragma: no cover - CI runs Linux only
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)  # type: ignore[attr-defined]
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
            # "::" then means IPv6 only, the same on every OS (defaults differ).
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_dynamic(host: str, *, tries: int = PICK_TRIES) -> socket.socket:
    """Bind a free port: portpicker's pick, re-picked if taken before we bind, then port 0."""
    for _ in range(tries):
        try:
            port = int(portpicker.pick_unused_port())
        except portpicker.NoFreePortFoundError:
            break
        try:
            return bind_listener(host, port)
        except OSError as exc:
            if not is_in_use(exc):
                raise
            logger.debug("port %d was taken between pick and bind; picking again", port)
    return bind_listener(host, 0)


def bind_server_socket(host: str, port: int | None, *, strict: bool = False) -> BoundSocket:
    """Bind the listening socket of a server, following the rules in the module docstring.

    Raises:
        PortInUseError: ``port`` is busy and ``strict`` is set.
        ServerStartError: the address cannot be bound at all (bad host, no permission).
    """
    try:
        if port is None:
            sock = bind_dynamic(host)
            return BoundSocket(sock, host, sock.getsockname()[1], None)
        try:
            sock = bind_listener(host, port)
            return BoundSocket(sock, host, sock.getsockname()[1], port)
        except OSError as exc:
            if not is_in_use(exc):
                raise
        holder = find_holder(port)
        who = (
            f"pid {holder.pid} (lightning-stream serving {list(holder.logdirs)!r})"
            if holder is not None
            else "another process"
        )
        if strict:
            raise PortInUseError(
                f"port {port} on {host!r} is held by {who}; stop it, "
                "or pass port=None (or drop strict_port=True) to use a free port",
                port=port,
                owner_pid=holder.pid if holder is not None else None,
            )
        sock = bind_dynamic(host)
        actual = sock.getsockname()[1]
        message = (
            f"port {port} on {host!r} is held by {who}; serving on port {actual} instead "
            "(pass strict_port=True to fail instead of falling back)"
        )
        logger.warning("%s", message)
        return BoundSocket(sock, host, actual, port, message)
    except OSError as exc:
        raise ServerStartError(
            f"cannot bind {host!r} port {port!r}: {exc.strerror or exc}; "
            "check the host is an address of this machine (e.g. '127.0.0.1'), or use port=None"
        ) from exc


def _resolve(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    """The first address for ``host``, IPv4 before IPv6 (``localhost`` may list ::1 first)."""
    bare = host.strip().strip("[]")
    infos = socket.getaddrinfo(bare or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(errno.EADDRNOTAVAIL, f"no address for {host!r}")
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _, _, _, address = infos[0]
    return family, (str(address[0]), int(address[1]))
