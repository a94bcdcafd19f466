"""A WebSocket client on a bare TCP socket, for attacks no well-behaved library makes.

It sets the socket's receive buffer before connecting (so a client that
stops reading fills up quickly), performs the upgrade by hand, sends masked
text frames, and reads server frames one at a time, including the close
frame with its code.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest

CLOSE = 0x8


class RawWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, port: int, *, receive_buffer: int | None = None, path: str = "/ws"
    ) -> RawWebSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: neurelay.v1.json\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def send(self, frame: dict[str, object]) -> None:
        payload = orjson.dumps(frame)
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = bytes((0x81, 0x80 | size))
        elif size < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)
        await self.writer.drain()

    async def receive(self) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload)."""
        first, second = await self.reader.readexactly(2)
        assert not second & 0x80, "server frames are never masked"
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(size)

    async def receive_json(self) -> dict[str, object]:
        opcode, payload = await self.receive()
        assert opcode == 0x1, (opcode, payload[:200])
        frame: dict[str, object] = orjson.loads(payload)
        return frame

    async def close_code(self) -> int:
        """Read until the close frame; return its code."""
        while True:
            opcode, payload = await self.receive()
            if opcode == CLOSE:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code

    def abort(self) -> None:
        self.writer.transport.abort()

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def raw_websocket() -> AsyncIterator[Callable[..., Awaitable[RawWebSocket]]]:
    """`await raw_websocket(port, receive_buffer=None)`: raw clients, closed after the test."""
    opened: list[RawWebSocket] = []

    async def open_one(port: int, **kwargs: int | str | None) -> RawWebSocket:
        client = await RawWebSocket.connect(port, **kwargs)  # type: ignore[arg-type]
        opened.append(client)
        return client

    yield open_one
    for client in opened:
        client.close()
        with contextlib.suppress(OSError):
            await client.writer.wait_closed()
