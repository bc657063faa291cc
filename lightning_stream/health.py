"""Is a stream server answering? ``GET /health`` with the stdlib, for the supervisor, the
registry's pruning, the CLI and the notebook.

No aiohttp (a probe runs in processes that never serve) and never an exception: a probe
tells ``ok`` (the parsed ``/health``), ``gone`` (refused, or not our server) and ``slow``
(busy or unreachable, which is no proof of death) apart.
"""

from __future__ import annotations

import http.client
import json
from typing import Any

from lightning_stream.config import is_wildcard

__all__ = ["HEALTH_TIMEOUT_S", "connect_host", "health_check", "probe"]

HEALTH_TIMEOUT_S = 1.0


def health_check(host: str, port: int, *, timeout: float = HEALTH_TIMEOUT_S) -> dict[str, Any] | None:
    """GET ``/health``; the parsed JSON on HTTP 200, else None. Never raises."""
    return probe(host, port, timeout)[1]


def probe(host: str, port: int, timeout: float) -> tuple[str, dict[str, Any] | None]:
    """``("ok", health)``, ``("gone", None)`` (refused, or not our server) or ``("slow", None)``."""
    conn = http.client.HTTPConnection(connect_host(host), port, timeout=timeout)
    try:
        conn.request("GET", "/health", headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
        data = json.loads(body) if response.status == 200 else None
        return ("ok", data) if isinstance(data, dict) else ("gone", None)
    except ConnectionRefusedError:
        return "gone", None
    except (TimeoutError, OSError, http.client.HTTPException):
        return "slow", None  # busy or unreachable: not proof of death
    except ValueError:
        return "gone", None
    finally:
        conn.close()


def connect_host(host: str) -> str:
    """The address a local client dials for a server bound to ``host`` (wildcards → loopback)."""
    bare = host.strip().strip("[]")
    if is_wildcard(bare):
        return "::1" if bare == "::" else "127.0.0.1"
    return bare
