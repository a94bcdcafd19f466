"""Outbox: a connection's bounded send queue and the one task that drains it.

Fan-out pushes already-encoded frames without awaiting anything; the
connection's writer task sends them in order. A client that stops reading
lets its queue fill; at the configured frame or byte bound the outbox calls
`on_overflow` once (the connection then closes it with 4005), so a slow
consumer can neither slow the others down nor grow the gateway's memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import WSMsgType, web

from neurelay.gateway.settings import LiveSettings
from neurelay.protocol.codecs import Codec


class Outbox:
    __slots__ = (
        "_frames",
        "_live",
        "_on_overflow",
        "_queued_bytes",
        "_wakeup",
        "closed",
        "codec",
    )

    def __init__(self, codec: Codec, live: LiveSettings, on_overflow: Callable[[], None]) -> None:
        self.codec = codec
        self._live = live
        self._on_overflow = on_overflow
        self._frames: deque[bytes] = deque()
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self.closed = False

    def push(self, data: bytes) -> None:
        """Queue an encoded frame; never blocks."""
        if self.closed:
            return
        limits = self._live.config.limits
        size = len(data)
        if (
            len(self._frames) >= limits.send_queue_frames
            or self._queued_bytes + size > limits.send_queue_bytes
        ):
            self.overflow()
            return
        self._frames.append(data)
        self._queued_bytes += size
        self._wakeup.set()

    def overflow(self) -> None:
        """The client cannot keep up: drop what is queued and have the connection closed."""
        if self.closed:
            return
        self.close()
        self._frames.clear()
        self._queued_bytes = 0
        self._on_overflow()

    def send(self, frame: Mapping[str, Any]) -> None:
        self.push(self.codec.encode(frame))

    def close(self) -> None:
        """Stop accepting frames and let the writer finish."""
        self.closed = True
        self._wakeup.set()

    async def run(self, ws: web.WebSocketResponse) -> None:
        """Write queued frames in order until the outbox is closed and empty."""
        opcode = WSMsgType.BINARY if self.codec.binary else WSMsgType.TEXT
        frames = self._frames
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while frames:
                data = frames.popleft()
                self._queued_bytes -= len(data)
                await ws.send_frame(data, opcode)
            if self.closed:
                return
