"""The dashboard in Jupyter: ``show()`` and the ``%lightning_stream`` magic.

``show(server_or_url=None, height=600)`` returns an ``IPython.display.IFrame``,
so it renders as a cell's value (and can be inspected outside a kernel).
``%load_ext lightning_stream`` then ``%lightning_stream LOGDIR [--port P]``
starts a server through the process-wide manager (in a child process, as
``StreamCallback`` does), or reuses one, and displays it, like ``%tensorboard`` does.

Remote kernels (JupyterHub, VS Code remote, Colab-like setups): the browser
cannot reach ``127.0.0.1:PORT`` of the kernel's machine, so set
``LIGHTNING_STREAM_PROXY_URL`` to a template with ``%PORT%``, e.g.
``https://hub.example/user/me/proxy/%PORT%/`` (jupyter-server-proxy), the same
idea as ``TENSORBOARD_PROXY_URL``. It applies whenever the port is known (a
server, a port, a registry entry), not to an explicit URL string.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import urllib.parse
from typing import TYPE_CHECKING, Any

from lightning_stream.config import ENV_TOKEN
from lightning_stream.errors import ServerNotRunningError
from lightning_stream.registry import url_points_at

if TYPE_CHECKING:
    from IPython.display import IFrame

    from lightning_stream.registry import ServerInfo
    from lightning_stream.server import StreamServer

__all__ = ["ENV_PROXY_URL", "dashboard_url", "default_server", "load_ipython_extension", "show"]

ENV_PROXY_URL = "LIGHTNING_STREAM_PROXY_URL"


def dashboard_url(server_or_url: StreamServer | ServerInfo | str | int | None = None) -> str:
    """The URL a browser should open for the dashboard (proxy template and token applied).

    ``None`` means this process's own server (the newest one its manager runs, e.g. the one a
    ``StreamCallback`` launched), else the newest live server in the port registry; an ``int``
    (or a string of digits) is a port on this machine; any other string is used as is.

    Raises:
        ServerNotRunningError: ``None`` was given and no server is live.
    """
    token: str | None = None
    if server_or_url is None:
        server_or_url = default_server()[0]
    if isinstance(server_or_url, bool):
        raise TypeError(f"server_or_url={server_or_url!r}: pass a StreamServer, a URL, a port, or None")
    if isinstance(server_or_url, str) and server_or_url.strip().isdigit():
        server_or_url = int(server_or_url)
    if isinstance(server_or_url, str):
        url = server_or_url.strip()
        if "://" not in url:
            raise ValueError(
                f"server_or_url={server_or_url!r} is not a URL; pass e.g. 'http://127.0.0.1:6007/' or a port"
            )
        return url
    if isinstance(server_or_url, int):
        if not 1 <= server_or_url <= 65535:
            raise ValueError(f"port {server_or_url!r} is out of range; use 1..65535")
        port, local = server_or_url, f"http://127.0.0.1:{server_or_url}/"
    elif hasattr(server_or_url, "port") and hasattr(server_or_url, "url"):
        port, local = int(server_or_url.port), str(server_or_url.url)
        host = str(getattr(server_or_url, "host", "127.0.0.1"))
        if not url_points_at(local, host, port):  # the token goes to host:port, or nowhere
            raise ValueError(
                f"server_or_url has url {local!r}, which is not its own host {host!r} port {port}; "
                "refusing to send the token there: pass the server's port or its own http://HOST:PORT/ URL"
            )
        config = getattr(server_or_url, "config", None)
        token = getattr(config, "token", None)
        if token is None and getattr(server_or_url, "token_required", False):
            token = os.environ.get(ENV_TOKEN) or None
    else:
        raise TypeError(
            f"server_or_url={server_or_url!r}: pass a StreamServer, a registry ServerInfo, a URL, a port, or None"
        )
    template = os.environ.get(ENV_PROXY_URL)
    url = template.replace("%PORT%", str(port)) if template else local
    if not url.endswith("/") and "?" not in url:
        url += "/"
    if token:
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"token": token})
    return url


def default_server() -> tuple[StreamServer | ServerInfo, str]:
    """The server ``show()`` picks without an argument, and a sentence saying which one it is.

    This process's own server first: after a ``fit`` in this kernel, the newest server of another
    process (a second kernel, a ``lightning-stream serve``) is not the one the user means.

    Raises:
        ServerNotRunningError: neither this process nor any other runs a live server.
    """
    manager_module = sys.modules.get("lightning_stream.manager")  # not imported: this process serves nothing
    if manager_module is not None:
        own = manager_module.get_stream_server_manager().servers
        if own:
            return own[-1], f"lightning-stream: showing this process's server at {own[-1].url}"
    from lightning_stream.registry import list_servers

    servers = list_servers()
    if not servers:
        raise ServerNotRunningError(
            "no live lightning-stream server on this machine; start one with "
            "'%lightning_stream LOGDIR' (after '%load_ext lightning_stream') or 'lightning-stream serve LOGDIR'"
        )
    newest = servers[-1]
    return newest, (
        f"lightning-stream: this process runs no server; showing the newest live one, {newest.url} "
        f"(pid {newest.pid}, serving {', '.join(newest.logdirs) or 'no logdir'})"
    )


def show(server_or_url: StreamServer | ServerInfo | str | int | None = None, height: int = 600) -> IFrame:
    """An IFrame of the live dashboard: the value of a notebook cell renders it.

    Args:
        server_or_url: a ``StreamServer``, a registry ``ServerInfo``, a URL, a port,
            or ``None`` for this process's own server, else the newest live one on this
            machine (it prints which).
        height: height of the frame in pixels.

    Example::

        from lightning_stream.notebook import show
        show()            # the newest server on this machine
        show(6007, 800)   # the one on port 6007, taller
    """
    if isinstance(height, bool) or not isinstance(height, int) or height <= 0:
        raise ValueError(f"height={height!r} must be a positive number of pixels, e.g. 600")
    from IPython.display import IFrame

    if server_or_url is None:
        server_or_url, which = default_server()
        print(which)
    return IFrame(dashboard_url(server_or_url), width="100%", height=height)


# ------------------------------------------------------------------- magic


class _MagicParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise ValueError(f"%lightning_stream: {message}; usage: %lightning_stream LOGDIR [--port P] [--height H]")


def _magic_parser() -> argparse.ArgumentParser:
    parser = _MagicParser(prog="%lightning_stream", add_help=False)
    parser.add_argument("logdir")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--height", type=int, default=600)
    return parser


def lightning_stream_magic(line: str) -> IFrame:
    """``%lightning_stream LOGDIR [--port P] [--height H]``: start or reuse a server, return its IFrame.

    Reuse order, like ``%tensorboard``: a server of this kernel (the process-wide
    manager's, e.g. one a ``StreamCallback`` started; on port P if given) now also
    watches LOGDIR; else a live registry server of another process that already
    watches LOGDIR (on port P if given); else a new server from the manager, held
    for the life of the kernel. Prints which one it is.
    """
    args = _magic_parser().parse_args(shlex.split(line))
    logdir = os.path.abspath(os.path.expanduser(args.logdir))
    if not os.path.isdir(logdir):
        raise ValueError(f"%lightning_stream: LOGDIR {args.logdir!r} is not a directory; create it or fix the path")
    if args.port is not None and not 1 <= args.port <= 65535:
        raise ValueError(f"%lightning_stream: --port {args.port!r} is out of range; use 1..65535")

    from lightning_stream.manager import get_stream_server_manager

    manager = get_stream_server_manager()
    if not manager.servers:
        from lightning_stream.registry import find_server_for

        match = find_server_for(logdir, port=args.port, covering=False, exclude_pid=os.getpid())
        other = match.info if match is not None else None
        if other is not None:
            print(f"reusing server on port {other.port} (pid {other.pid})")
            return show(other, args.height)
    # In a child process, as StreamCallback does: training in this kernel then shares no GIL with serving,
    # and a callback acquiring later reuses this server.
    options: dict[str, Any] = {"isolated": True} if args.port is None else {"isolated": True, "port": args.port}
    result = manager.acquire_result(**options)
    server = result.server
    if result.reused and server in _held:
        manager.release(server)  # the kernel holds one reference per server, however often the magic runs
    _held.add(server)
    try:
        server.watch(logdir)
    except BaseException:
        if result.launched:
            _held.discard(server)
            manager.release(server)
        raise
    if result.reused:
        print(f"reusing server on port {server.port} (pid {server.pid})")
    else:
        print(result.message)
    return show(server, args.height)


# Servers the magic holds a manager reference on (one each), for the life of the kernel.
_held: set[StreamServer] = set()


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%lightning_stream`` (called by ``%load_ext lightning_stream``)."""

    def magic(line: str) -> None:
        from IPython.display import display

        try:
            frame = lightning_stream_magic(line)
        except ValueError as exc:
            from IPython.core.error import UsageError

            raise UsageError(str(exc)) from None
        display(frame)  # type: ignore[no-untyped-call]

    ipython.register_magic_function(magic, magic_kind="line", magic_name="lightning_stream")
