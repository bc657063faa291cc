"""The exceptions lightning-stream raises.

Bad arguments raise the built-in ``ValueError``/``TypeError``; everything that
goes wrong at run time derives from one root, so callers can catch it::

    LightningStreamError
    ├── ServerStartError        the server could not be started (bind, health)
    │   ├── PortInUseError      a fixed port asked for strictly is held by another
    │   └── ServerProcessError  the server's child process could not run (the manager then
    │                           serves from a thread)
    ├── ServerNotRunningError   an operation needs a running server
    ├── RegistryError           the port registry directory cannot be used
    ├── HubClosed               a subscription ended: the hub or the subscription was closed
    └── ClientError             a client request failed (HTTP status, protocol)
        └── NotFoundError       unknown run or tag (HTTP 404)

Every class of the tree is defined here (``hub.HubClosed`` and ``isolated.ServerProcessError``
are the same objects, imported where they are raised). Outside it: ``params.BadRequest``, a
``ValueError`` the server turns into an HTTP 400 and never lets out.

Messages say what to do, quoting the offending value with ``!r``.
"""

from __future__ import annotations


class LightningStreamError(Exception):
    """Root of every run-time error raised by lightning-stream."""


class ServerStartError(LightningStreamError):
    """The stream server could not be started."""


class PortInUseError(ServerStartError):
    """A port asked for with ``strict_port=True`` is held by another socket."""

    def __init__(self, message: str, *, port: int, owner_pid: int | None = None) -> None:
        super().__init__(message)
        self.port = port
        self.owner_pid = owner_pid


class ServerProcessError(ServerStartError):
    """The server's child process could not be started (no interpreter, import error, crash)."""


class ServerNotRunningError(LightningStreamError):
    """An operation needs a running server and there is none."""


class RegistryError(LightningStreamError):
    """The port registry directory cannot be created or written."""


class HubClosed(LightningStreamError):
    """The hub or the subscription was closed; stop reading from it."""


class ClientError(LightningStreamError):
    """A request made by ``StreamClient`` failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFoundError(ClientError):
    """The server does not know the run or tag asked for (HTTP 404)."""
