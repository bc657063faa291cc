"""Real SSE/WebSocket subscribers running on their own loop thread, for end-to-end tests.

They connect with aiohttp (a real client over loopback) and record every point and
status message they receive, so a test can run a blocking ``Trainer.fit`` in its own
thread and compare what arrived with what was written.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import aiohttp


class Subscriber:
    """Collects ``(run, tag, step, value)`` points and status messages from one stream."""

    def __init__(self, url: str, kind: str = "sse", run: str = "*", tag: str = "*") -> None:
        self.url = url.rstrip("/")
        self.kind = kind
        self.run = run
        self.tag = tag
        self.points: list[tuple[str, str, int, float]] = []
        self.statuses: list[dict[str, Any]] = []
        self.seqs: list[int] = []
        self.resets = 0
        self.log: list[tuple[str, dict[str, Any]]] = []  # every message, in arrival order
        self.connected = threading.Event()
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._main, name=f"subscriber-{kind}", daemon=True)

    def __enter__(self) -> Subscriber:
        self._thread.start()
        if not self.connected.wait(10):
            raise TimeoutError(f"{self.kind} subscriber could not connect to {self.url}: {self.errors}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._cancel)
            self._thread.join(10)

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def snapshot(self) -> list[tuple[str, str, int, float]]:
        with self._lock:
            return list(self.points)

    def wait_for(self, predicate: Any, timeout: float = 20.0) -> bool:
        """Poll until ``predicate(self)`` is true (a generous bound, not a timing assertion)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if predicate(self):
                    return True
            time.sleep(0.02)
        with self._lock:
            return bool(predicate(self))

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(self._run())
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException as error:  # recorded for the test to report
            self.errors.append(error)
        finally:
            self._loop.close()

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as session:
            if self.kind == "sse":
                await self._sse(session)
            else:
                await self._ws(session)

    def _record(self, kind: str, seq: int, payload: dict[str, Any]) -> None:
        with self._lock:
            self.seqs.append(seq)
            self.log.append((kind, payload))
            if kind == "scalars":
                for p in payload["points"]:
                    self.points.append((p["run"], p["tag"], int(p["step"]), float(p["value"])))
            elif kind == "status":
                self.statuses.append(payload)
            elif kind == "reset":
                self.resets += 1

    async def _sse(self, session: aiohttp.ClientSession) -> None:
        params = {"run": self.run, "tag": self.tag}
        async with session.get(f"{self.url}/stream", params=params, timeout=aiohttp.ClientTimeout(total=None)) as resp:
            resp.raise_for_status()
            self.connected.set()
            event, data, seq = "message", "", 0
            async for raw in resp.content:
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if data:
                        self._record(event, seq, json.loads(data))
                    event, data = "message", ""
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif line.startswith("id:"):
                    seq = int(line[3:].strip())

    async def _ws(self, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(f"{self.url}/ws") as ws:
            await ws.send_json({"op": "subscribe", "run": self.run, "tag": self.tag})
            self.connected.set()
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                body = json.loads(msg.data)
                if body.get("type") in ("scalars", "status", "reset"):
                    self._record(body["type"], int(body.get("seq", 0)), body)
