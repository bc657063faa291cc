"""Direct sends: a broadcast writes a fast client's frames straight to its socket, with no task wake-up.

Why: each client used to have a pump task that the hub woke for every broadcast (a future, a task
step, a timer, aiohttp's ``write`` and ``drain``). With 1,000 clients and 20 broadcasts per second
that is 20,000 task steps per second, and the profile of ``benchmarks/bench_fanout.py`` put those
pumps at ~80 % of the server's CPU, only about half of it the socket send itself.

How: while a client keeps up, its pump task is parked in :meth:`DirectSender.park` and its
subscription has a listener (``Subscription.listen``) that the hub calls synchronously right
after it logs new messages. The listener takes what is ready and hands each frame's bytes
(encoded once per filter and format with the transport's framing included, and shared by every
client: ``wire.FrameCache``) to ``transport.write``, which sends at once when the socket's buffer
has room. A frame that would take the transport's own buffer over :data:`HIGH_WATER` (a client
that reads slowly), or one larger than the caller's ``max_frame``, is held and the pump is woken:
it writes with aiohttp's flow control (``await drain``) as before, and parks again once caught up.
So a slow client costs what it did before and is reset by the hub's rules when too far behind,
it never holds more than about ``HIGH_WATER`` of private buffer on the direct path, and a fast
client costs one ``send`` per broadcast.

Limits: the writes bypass aiohttp's writers, so the caller must give frames in the exact wire
form the connection expects (SSE with or without HTTP/1.1 chunked framing, WebSocket frames with
their header) and must never let the pump write while the sender is parked: the pump writes only
between a hand-over and its next :meth:`DirectSender.park`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from lightning_stream.errors import HubClosed
from lightning_stream.hub import Message, Subscription

__all__ = ["HIGH_WATER", "DirectSender", "DirectStats", "chunked", "ws_text_frame"]

#: most bytes a direct write may leave in a transport's user-space buffer (asyncio's and aiohttp's own mark)
HIGH_WATER = 64 * 1024


@dataclass
class DirectStats:
    """Counters shared by the senders of one route (for tests and benchmarks)."""

    frames: int = 0
    bytes: int = 0
    handovers: int = 0


def chunked(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk (nothing for nothing: an empty chunk would end the body)."""
    return b"%x\r\n%b\r\n" % (len(data), data) if data else b""


def ws_text_frame(payload: bytes) -> bytes:
    """A final, unmasked WebSocket text frame (RFC 6455 5.2: servers never mask)."""
    if not payload:
        return b""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, n))
    elif n < 65536:
        head = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return head + payload


def _resolve(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


class DirectSender:
    """Writes ``sub``'s frames to ``transport`` from inside the hub's broadcast while the client keeps up.

    ``frame(message)`` gives the bytes to put on the wire (b"" for a message the client does not
    get); ``usable()`` says whether the connection still takes data frames (a WebSocket whose close
    handshake began does not). A ``transport`` of None means no direct path: every message is
    handed to the pump. The pump reads with :meth:`take`, never ``sub.get_nowait()`` (the listener
    may hold back the message it could not write).
    """

    def __init__(
        self,
        sub: Subscription,
        transport: asyncio.BaseTransport | None,
        frame: Callable[[Message], bytes],
        stats: DirectStats,
        *,
        max_frame: int = HIGH_WATER,
        usable: Callable[[], bool] | None = None,
    ) -> None:
        self.sub = sub
        self.transport = transport if isinstance(transport, asyncio.WriteTransport) else None
        self.held: Message | None = None  # taken by the listener, not written: the pump's next message
        self.last_write = time.monotonic()
        self._frame = frame
        self._stats = stats
        self._max_frame = max_frame
        self._usable = usable
        self._wakeup: asyncio.Future[bool] | None = None

    async def park(self, timeout: float | None) -> bool:
        """Let broadcasts write directly until the pump is needed (True) or ``timeout`` s pass (False).

        True means: write what :meth:`take` gives, with flow control, until it gives None (it raises
        HubClosed once the subscription closed).
        """
        if self.held is not None:
            return True
        loop = asyncio.get_running_loop()
        wakeup: asyncio.Future[bool] = loop.create_future()
        self._wakeup = wakeup
        timer = None if timeout is None else loop.call_later(timeout, _resolve, wakeup, False)
        self.sub.listen(self._on_ready)
        try:
            self._on_ready()  # what arrived before we listened
            return await wakeup
        finally:
            if timer is not None:
                timer.cancel()
            self.sub.listen(None)
            self._wakeup = None

    @property
    def parked(self) -> bool:
        """Whether the pump is parked, i.e. broadcasts write to this client directly."""
        return self._wakeup is not None and not self._wakeup.done()

    def take(self) -> Message | None:
        """The pump's next message: the one the listener held back, else the subscription's next one."""
        message, self.held = self.held, None
        return self.sub.get_nowait() if message is None else message

    def _on_ready(self) -> None:
        wakeup = self._wakeup
        if wakeup is None or wakeup.done():
            return
        transport = self.transport
        sub = self.sub
        try:
            while True:
                message = sub.get_nowait()
                if message is None:
                    return  # nothing to send: stay parked, whatever the transport's state
                data = self._frame(message)
                if not data:
                    continue
                size = len(data)
                if (
                    transport is None  # no direct path for this connection
                    or transport.is_closing()  # the pump's write fails and ends the handler
                    or (self._usable is not None and not self._usable())
                    or size > self._max_frame
                    or transport.get_write_buffer_size() + size > HIGH_WATER  # a slow client
                ):
                    self.held = message
                    self._hand_over(wakeup)
                    return
                transport.write(data)
                self.last_write = time.monotonic()
                stats = self._stats
                stats.frames += 1
                stats.bytes += size
        except HubClosed:
            self._hand_over(wakeup)
        except Exception as exc:  # the pump raises it, in the connection's task
            self.sub.listen(None)
            wakeup.set_exception(exc)

    def _hand_over(self, wakeup: asyncio.Future[bool]) -> None:
        self.sub.listen(None)
        self._stats.handovers += 1
        wakeup.set_result(True)
