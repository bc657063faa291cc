"""The dashboard's files (``static/``), held in memory and answered with an ``ETag``.

A page load asks for about two dozen small files (ES modules served as they are). ``FileResponse``
stats and opens each in a worker thread and sends it with ``sendfile``: several hops through the
event loop per file, which under load cost more than the bytes (~150 KB in all). Read once when the
app is made, each file is one write; ``Cache-Control: no-cache`` with an ``ETag`` lets a reload
revalidate every file with a ``304`` and no body.

Only regular files under the directory are listed (no symlinks), by their ``/``-separated name: no
path is ever joined from a URL.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from aiohttp import hdrs, web

__all__ = ["StaticFile", "StaticFiles"]

_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".html": "text/html"}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str  # quoted, as sent


class StaticFiles:
    """Every regular file under ``root`` (none when it is missing), read once."""

    def __init__(self, root: Path) -> None:
        self.files: dict[str, StaticFile] = {}
        if not root.is_dir():
            return
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                body = path.read_bytes()
                kind = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
                self.files[path.relative_to(root).as_posix()] = StaticFile(body, kind, etag)

    def text(self, name: str) -> str | None:
        """A file's text (UTF-8), or None when there is no such file."""
        found = self.files.get(name)
        return None if found is None else found.body.decode("utf-8")

    def response(self, request: web.Request, name: str) -> web.Response | None:
        """The file ``name`` (``304`` when the caller holds this version), or None when there is none."""
        found = self.files.get(name)
        if found is None:
            return None
        headers = {hdrs.CACHE_CONTROL: "no-cache", hdrs.ETAG: found.etag}
        if found.etag in request.headers.get(hdrs.IF_NONE_MATCH, "").replace(" ", "").split(","):
            return web.Response(status=304, headers=headers)
        charset = "utf-8" if found.content_type.startswith("text/") else None
        return web.Response(body=found.body, content_type=found.content_type, charset=charset, headers=headers)
