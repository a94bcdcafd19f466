"""Connections that never finish a request: raw sockets, half-sent upgrades, slow loris, floods.

Each is closed at the handshake deadline, or sooner when the pending cap or
the open-file limit needs room; `/healthz` keeps answering, a fresh client
is served afterwards, and a bystander loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import resource
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.abuse.bystander import Bystander, scaled

HALF_UPGRADE = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upg"
HALF_BODY = (
    "POST /api/v1/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    'Authorization: Bearer {token}\r\nContent-Length: 100000\r\n\r\n{{"channel": '
)


class Sockets:
    """Raw TCP connections to a gateway, closed after the test."""

    def __init__(self) -> None:
        self.opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def open(self, port: int, count: int, send: bytes = b"") -> None:
        for _ in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if send:
                writer.write(send)
            self.opened.append((reader, writer))

    async def all_closed_by_the_gateway(self, timeout: float = 60.0) -> None:
        async def closed(reader: asyncio.StreamReader) -> None:
            with contextlib.suppress(ConnectionError):
                assert await reader.read() == b""

        async with asyncio.timeout(timeout):
            await asyncio.gather(*(closed(reader) for reader, _ in self.opened))

    def close(self) -> None:
        for _, writer in self.opened:
            writer.transport.abort()


@pytest.fixture
async def sockets() -> AsyncIterator[Sockets]:
    opened = Sockets()
    yield opened
    opened.close()
    await asyncio.sleep(0)


def _cut(running: Any, reason: str) -> float:
    value = running.gateway.metrics.registry.get_sample_value(
        "neurelay_connections_cut_total", {"reason": reason}
    )
    return float(value or 0.0)


async def test_silent_half_sent_and_trickling_connections_are_closed_at_the_deadline(
    make_config: Any, gateway_factory: Any, connect: Any, token: Any, sockets: Sockets
) -> None:
    config = make_config(
        server={"handshake_timeout_seconds": 1.0}, nats={"request_timeout_seconds": 1.0}
    )
    running = await gateway_factory(config)
    bystander = await Bystander(connect, running.ws_url, token(user="bystander")).start()
    count = scaled(10, 200)
    await sockets.open(running.port, count)
    await sockets.open(running.port, count, HALF_UPGRADE)
    await sockets.open(running.port, count, HALF_BODY.format(token=token()).encode())
    await sockets.open(running.port, count, b"G")

    async def trickle() -> None:
        # Slow loris: a byte of the header now and then, never the end of it.
        for byte in b"ET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000:
            await asyncio.sleep(0.1)
            for _, writer in sockets.opened[-count:]:
                if not writer.is_closing():
                    writer.write(bytes([byte]))

    loris = asyncio.create_task(trickle())
    try:
        await sockets.all_closed_by_the_gateway()
    finally:
        loris.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loris

    assert _cut(running, "deadline") >= 4 * count
    fresh = await connect(running.ws_url, token(user="fresh"))
    assert (await fresh.request({"type": "ping"}))["type"] == "pong"
    await bystander.finish()


async def test_a_new_connection_beyond_the_pending_cap_closes_the_oldest(
    make_config: Any, gateway_factory: Any, connect: Any, token: Any, sockets: Sockets
) -> None:
    config = make_config(server={"handshake_timeout_seconds": 300, "max_pending_connections": 10})
    running = await gateway_factory(config)
    bystander = await Bystander(connect, running.ws_url, token(user="bystander")).start()
    await sockets.open(running.port, 25)
    oldest = Sockets()
    oldest.opened = sockets.opened[:15]

    await oldest.all_closed_by_the_gateway()

    assert _cut(running, "pending_limit") >= 15
    fresh = await connect(running.ws_url, token(user="fresh"))
    assert (await fresh.request({"type": "ping"}))["type"] == "pong"
    await bystander.finish()


async def test_under_a_1024_file_limit_1100_idle_sockets_neither_starve_probes_nor_clients(
    gateway_process: Any, connect: Any, token: Any, sockets: Sockets
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gateway = gateway_process("fd", server={"handshake_timeout_seconds": 5.0})
    gateway.wrapper = ["prlimit", "--nofile=1024:1024", "--"]
    await gateway.start()
    bystander = await Bystander(connect, gateway.ws_url, token(user="bystander")).start()

    await sockets.open(gateway.port, 1100)
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz", "/metrics"):
            async with http.get(gateway.http_url + path) as response:
                assert response.status == 200, path
    during = await connect(gateway.ws_url, token(user="during"))
    assert (await during.request({"type": "ping"}))["type"] == "pong"
    await sockets.all_closed_by_the_gateway()

    fresh = await connect(gateway.ws_url, token(user="fresh"))
    assert (await fresh.request({"type": "ping"}))["type"] == "pong"
    await bystander.finish()


async def test_a_refused_upgrade_kept_alive_is_closed_at_the_deadline(
    make_config: Any, gateway_factory: Any, sockets: Sockets
) -> None:
    running = await gateway_factory(make_config(server={"handshake_timeout_seconds": 1.0}))
    refused = (
        b"GET /ws?token=not-a-jwt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    await sockets.open(running.port, 1, refused)
    reader, _ = sockets.opened[0]
    status = await asyncio.wait_for(reader.readline(), 10)
    assert status.startswith(b"HTTP/1.1 4"), status
    # The refusal left the connection open for another request: it is pending again.
    async with asyncio.timeout(60):
        while await reader.read(65536):
            pass
    assert _cut(running, "deadline") >= 1


async def test_no_frame_of_the_doorman_lives_as_long_as_a_websocket(
    gateway: Any, connect: Any, token: Any
) -> None:
    client = await connect(gateway.ws_url, token())
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    doorman_frames = [
        o
        for o in gc.get_objects()
        if inspect.iscoroutine(o)
        and o.cr_frame is not None
        and o.cr_code.co_qualname.startswith("Doorman.")
    ]
    assert doorman_frames == []
