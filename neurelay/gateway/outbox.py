"""Outbox: a connection's bounded send queue and the one task that drains it.

Frames are pushed already encoded, without awaiting anything (fan-out
writes the bytes it shares between subscribers straight to the socket
instead, while `idle_transport` says nothing of the connection waits). While
nothing is queued and the socket's buffer is small, frames are gathered (up
to `DIRECT_WRITE_LIMIT` bytes) and written to the transport at the end of the
current pass of the event loop, all of one connection's in one `write` (no
task switch per frame, and under load several messages per system call).
With a `+batch` subprotocol the messages gathered (or queued) together
travel in as few WebSocket frames as `BATCH_FRAME_BYTES` allows. Otherwise
they are queued and the connection's writer task
sends them, in order, with aiohttp's flow control. The queue and the writer
task exist only while frames wait (most connections are idle: a deque and a
task each would cost them kilobytes). A client that stops
reading fills its socket buffer, then its queue; at the configured frame or
byte bound the outbox drops its queue and calls `on_overflow` once (the
connection then closes it with 4005, the close frame right behind what the
socket already holds), so a slow consumer can neither slow the others down
nor grow the gateway's memory.
"""

from __future__ import annotations

import asyncio
import struct
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from aiohttp import WSMsgType, web

from neurelay.gateway.settings import LiveSettings
from neurelay.protocol.codecs import BATCH_FRAME_BYTES, Codec

# Above this many bytes waiting in the socket's buffer, frames queue for the writer task.
DIRECT_WRITE_LIMIT = 64 * 1024


def websocket_frame(payload: bytes, binary: bool) -> bytes:
    """`payload` as one final, unmasked, uncompressed WebSocket frame, as a server sends it."""
    first = 0x82 if binary else 0x81
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", first, 126, size) + payload
    return struct.pack("!BBQ", first, 127, size) + payload


def batches(payloads: Sequence[bytes], separator: bytes, limit: int) -> Iterator[bytes]:
    """`payloads` in order, joined by `separator` into runs of at most `limit` bytes each (a
    payload longer than `limit` alone)."""
    start, size = 0, 0
    for i, payload in enumerate(payloads):
        added = len(payload) + (len(separator) if i > start else 0)
        if i > start and size + added > limit:
            yield separator.join(payloads[start:i])
            start, size, added = i, 0, len(payload)
        size += added
    if start < len(payloads):
        yield separator.join(payloads[start:])


class _Flusher:
    """Writes what outboxes gathered during one pass of the event loop."""

    __slots__ = ("_dirty", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[Outbox] = []

    def add(self, outbox: Outbox) -> None:
        if not self._dirty:
            self._loop.call_soon(self._flush)
        self._dirty.append(outbox)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for outbox in dirty:
            outbox._write_gathered()


_flushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Flusher] = (
    weakref.WeakKeyDictionary()
)


def _flusher() -> _Flusher:
    loop = asyncio.get_running_loop()
    flusher = _flushers.get(loop)
    if flusher is None:
        flusher = _flushers[loop] = _Flusher(loop)
    return flusher


class Outbox:
    __slots__ = (
        "_failure",
        "_flusher",
        "_frames",
        "_gathered",
        "_gathered_bytes",
        "_live",
        "_on_overflow",
        "_queued_bytes",
        "_transport",
        "_writer",
        "_ws",
        "closed",
        "codec",
    )

    def __init__(self, codec: Codec, live: LiveSettings, on_overflow: Callable[[], None]) -> None:
        self.codec = codec
        self._live = live
        self._on_overflow = on_overflow
        self._frames: deque[bytes] | None = None  # while frames wait for the writer
        self._queued_bytes = 0
        self._writer: asyncio.Task[None] | None = None  # while it sends them
        self._failure: Exception | None = None  # what broke the writer
        self._transport: asyncio.WriteTransport | None = None
        self._ws: web.WebSocketResponse | None = None
        self._flusher: _Flusher | None = None
        self._gathered: list[bytes] | None = None
        self._gathered_bytes = 0
        self.closed = False

    def start(self, ws: web.WebSocketResponse) -> None:
        """Send frames over `ws`, once it is prepared."""
        self._ws = ws

    def write_directly(self, ws: web.WebSocketResponse, transport: asyncio.WriteTransport) -> None:
        """Let frames go straight to `transport`, `ws`'s socket (only without compression)."""
        self._ws = ws
        self._transport = transport
        self._flusher = _flusher()

    def push(self, data: bytes, framed: bytes | None = None) -> None:
        """Send or queue an encoded frame (`framed`: it as a WebSocket frame); never blocks."""
        if self.closed:
            return
        gathered = self._gathered
        if gathered is not None:
            if not self._frames and self._gathered_bytes < DIRECT_WRITE_LIMIT:
                # Inline, not a method: this line runs once per delivery.
                gathered.append(
                    data
                    if self.codec.batched
                    else framed or websocket_frame(data, self.codec.binary)
                )
                self._gathered_bytes += len(data)
                return
            # A burst (a replay, say) past the direct-write bound goes through the bounded
            # queue, behind what was gathered: the writer task runs after the flush.
        else:
            transport, flusher = self._transport, self._flusher
            if (
                transport is not None
                and flusher is not None
                and not self._frames
                and transport.get_write_buffer_size() < DIRECT_WRITE_LIMIT
                and not transport.is_closing()
            ):
                # Nothing queued, so nothing can overtake: the writer task writes each frame
                # it takes before it awaits anything.
                self._gathered = [self._gatherable(data, framed)]
                self._gathered_bytes = len(data)
                flusher.add(self)
                return
        limits = self._live.config.limits
        size = len(data)
        frames = self._frames
        if frames is None:
            frames = self._frames = deque()
        if (
            len(frames) >= limits.send_queue_frames
            or self._queued_bytes + size > limits.send_queue_bytes
        ):
            self.overflow()
            return
        frames.append(data)
        self._queued_bytes += size
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_queued(), name="neurelay-writer")

    def idle_transport(self) -> asyncio.WriteTransport | None:
        """The socket, if bytes written to it now come right after everything pushed before:
        nothing gathered or queued, and its buffer under `DIRECT_WRITE_LIMIT`. Else None."""
        transport = self._transport
        if (
            transport is None
            or self._gathered is not None
            or self._frames
            or self.closed
            or transport.get_write_buffer_size() >= DIRECT_WRITE_LIMIT
            or transport.is_closing()
        ):
            return None
        ws = self._ws
        if ws is None or ws.closed:  # nothing may follow a close frame
            return None
        return transport

    def _gatherable(self, data: bytes, framed: bytes | None) -> bytes:
        """What the gathered list holds: payloads when batching (framed at the flush)."""
        if self.codec.batched:
            return data
        return framed or websocket_frame(data, self.codec.binary)

    def _write_gathered(self) -> None:
        gathered, self._gathered = self._gathered, None
        transport, ws = self._transport, self._ws
        if (
            gathered
            and transport is not None
            and ws is not None
            and not transport.is_closing()
            and not ws.closed  # nothing may follow a close frame
        ):
            codec = self.codec
            if codec.batched:
                gathered = [
                    websocket_frame(batch, codec.binary)
                    for batch in batches(gathered, codec.separator, BATCH_FRAME_BYTES)
                ]
            transport.write(gathered[0] if len(gathered) == 1 else b"".join(gathered))

    def overflow(self) -> None:
        """The client cannot keep up: drop what is queued and have the connection closed."""
        if self.closed:
            return
        self.close()
        self._gathered = None
        self._frames = None
        self._queued_bytes = 0
        self._on_overflow()

    def send(self, frame: Mapping[str, Any]) -> None:
        self.push(self.codec.encode(frame))

    def close(self) -> None:
        """Stop accepting frames; the writer still sends what is queued."""
        self.closed = True

    async def flushed(self, timeout: float) -> None:
        """Wait up to `timeout` seconds until the queued frames are written."""
        if self._writer is not None:
            await asyncio.wait({self._writer}, timeout=timeout)

    async def stop(self) -> Exception | None:
        """Stop writing (what is still queued is dropped); the error the writer met, if any."""
        self.closed = True
        self._frames = None
        writer = self._writer
        if writer is not None:
            writer.cancel()
            await asyncio.wait({writer})
        return self._failure

    def _take(self, frames: deque[bytes]) -> bytes:
        """The next queued frame; when batching, as many queued messages as fit in one."""
        data = frames.popleft()
        self._queued_bytes -= len(data)
        codec = self.codec
        if not codec.batched or not frames:
            return data
        taken = [data]
        size = len(data)
        separator = codec.separator
        while frames and size + len(separator) + len(frames[0]) <= BATCH_FRAME_BYTES:
            data = frames.popleft()
            self._queued_bytes -= len(data)
            size += len(separator) + len(data)
            taken.append(data)
        return taken[0] if len(taken) == 1 else separator.join(taken)

    async def _write_queued(self) -> None:
        """Write queued frames in order until none is left (the writer task)."""
        opcode = WSMsgType.BINARY if self.codec.binary else WSMsgType.TEXT
        try:
            ws = self._ws
            if ws is None:
                raise RuntimeError("Outbox.start was not called")
            # Re-read each time: `stop` and `overflow` drop the queue.
            while frames := self._frames:
                await ws.send_frame(self._take(frames), opcode)
            # No await between the last look at the queue and here: a frame queued from now
            # on starts a new writer.
            self._frames = None
        except Exception as e:  # the socket broke: nothing more can be sent on it
            self.closed = True
            self._frames = None
            self._failure = e
        finally:
            if self._writer is asyncio.current_task():
                self._writer = None
