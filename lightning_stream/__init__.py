"""Watch PyTorch Lightning training live: every TensorBoard scalar, streamed.

Add ``StreamCallback()`` to a ``Trainer`` and open the URL it prints, or run
``lightning-stream serve LOGDIR`` on any TensorBoard log directory.

Every public name is resolved lazily (PEP 562 module ``__getattr__``), so
``import lightning_stream`` imports neither torch nor Lightning nor aiohttp:
the CLI, the client and the notebook helpers start in well under a second.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lightning_stream._version import __version__

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from lightning_stream.callback import StreamCallback
    from lightning_stream.client import StreamClient, StreamPoint
    from lightning_stream.config import ServerConfig
    from lightning_stream.errors import (
        ClientError,
        LightningStreamError,
        NotFoundError,
        PortInUseError,
        RegistryError,
        ServerNotRunningError,
        ServerStartError,
    )
    from lightning_stream.manager import (
        AcquireResult,
        StreamServerManager,
        get_stream_server,
        get_stream_server_manager,
        release_stream_server,
    )
    from lightning_stream.registry import ServerInfo, list_servers
    from lightning_stream.server import StreamServer

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "AcquireResult": "lightning_stream.manager",
    "ClientError": "lightning_stream.errors",
    "LightningStreamError": "lightning_stream.errors",
    "NotFoundError": "lightning_stream.errors",
    "PortInUseError": "lightning_stream.errors",
    "RegistryError": "lightning_stream.errors",
    "ServerConfig": "lightning_stream.config",
    "ServerInfo": "lightning_stream.registry",
    "ServerNotRunningError": "lightning_stream.errors",
    "ServerStartError": "lightning_stream.errors",
    "StreamCallback": "lightning_stream.callback",
    "StreamClient": "lightning_stream.client",
    "StreamPoint": "lightning_stream.client",
    "StreamServer": "lightning_stream.server",
    "StreamServerManager": "lightning_stream.manager",
    "get_stream_server": "lightning_stream.manager",
    "get_stream_server_manager": "lightning_stream.manager",
    "list_servers": "lightning_stream.registry",
    "release_stream_server": "lightning_stream.manager",
}

__all__ = [
    "AcquireResult",
    "ClientError",
    "LightningStreamError",
    "NotFoundError",
    "PortInUseError",
    "RegistryError",
    "ServerConfig",
    "ServerInfo",
    "ServerNotRunningError",
    "ServerStartError",
    "StreamCallback",
    "StreamClient",
    "StreamPoint",
    "StreamServer",
    "StreamServerManager",
    "__version__",
    "get_stream_server",
    "get_stream_server_manager",
    "list_servers",
    "load_ipython_extension",
    "notebook",
    "release_stream_server",
]


def __getattr__(name: str) -> Any:
    if name == "notebook":
        return importlib.import_module("lightning_stream.notebook")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_stream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return __all__


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext lightning_stream`` registers the ``%lightning_stream`` magic."""
    from lightning_stream.notebook import load_ipython_extension as _load

    _load(ipython)
