"""How the client reads what a gateway sends, against a scripted stand-in gateway.

The stand-in is a real aiohttp WebSocket server on loopback that answers
`authenticate` and then whatever the test scripts, so frames a real gateway
never sends (a newer gateway's, or broken ones) can be tried.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from neurelay.client import Client, ConnectionLost, ErrorCode, ServerError
from neurelay.protocol import frames

pytestmark = pytest.mark.timeout(30)

Script = Callable[[web.WebSocketResponse, dict[str, Any]], Awaitable[None]]


@pytest.fixture
async def stand_in() -> AsyncIterator[Callable[[Script], Awaitable[str]]]:
    """Start a stand-in gateway running `script` for every frame after the first `authenticate`."""
    runners: list[web.AppRunner] = []

    async def start(script: Script) -> str:
        async def handle(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse(protocols=("neurelay.v1.json",))
            await ws.prepare(request)
            authenticated = False
            async for msg in ws:
                frame = orjson.loads(msg.data)
                if frame["type"] == "authenticate" and not authenticated:
                    authenticated = True
                    await _send(ws, frames.authenticated("alice", 2**40, frame["id"]))
                else:
                    await script(ws, frame)
            return ws

        app = web.Application()
        app.router.add_get("/ws", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"ws://127.0.0.1:{port}/ws"

    yield start
    for runner in runners:
        await runner.cleanup()


async def _send(ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
    await ws.send_str(orjson.dumps(frame).decode())


async def test_frames_of_unknown_types_and_unknown_fields_are_skipped(stand_in):
    async def script(ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        await _send(ws, {"type": "typing", "channel": "agent:1", "users": ["bob"]})
        await _send(ws, {**frames.pong(frame["id"]), "region": "eu"})

    async with Client(await stand_in(script), "t", reconnect=False) as client:
        await client.ping()
        assert client.user == "alice"


async def test_an_error_code_this_version_does_not_know_reaches_the_caller_as_sent(stand_in):
    async def script(ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        await _send(
            ws, {"type": "error", "id": frame["id"], "code": "quota_exceeded", "message": "m"}
        )

    async with Client(await stand_in(script), "t", reconnect=False) as client:
        with pytest.raises(ServerError) as raised:
            await client.ping()
        assert raised.value.code == "quota_exceeded"


async def test_known_error_codes_reach_the_caller_as_the_enum(stand_in):
    async def script(ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        await _send(ws, frames.error(ErrorCode.FORBIDDEN, "no", frame["id"], frame["channel"]))

    async with Client(await stand_in(script), "t", reconnect=False) as client:
        with pytest.raises(ServerError) as raised:
            await client.subscribe("user:bob")
        assert raised.value.code is ErrorCode.FORBIDDEN
        assert raised.value.channel == "user:bob"


async def test_a_frame_the_client_cannot_read_ends_it_with_connection_lost(stand_in):
    async def script(ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        await _send(ws, {"type": "published", "id": frame["id"], "seq": 1})  # no channel

    async with Client(await stand_in(script), "t", reconnect=False) as client:
        with pytest.raises(ConnectionLost, match="cannot read"):
            await client.publish("agent:1", 1)
        with pytest.raises(ConnectionLost):
            await client.ping()


async def test_a_reply_of_the_wrong_type_is_connection_lost_not_a_crash(stand_in):
    async def script(ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        await _send(ws, frames.pong(frame["id"]))

    async with Client(await stand_in(script), "t", reconnect=False) as client:
        with pytest.raises(ConnectionLost, match="not Published"):
            await client.publish("agent:1", 1)


async def test_a_burst_of_expiry_notices_starts_one_reauthentication(stand_in):
    asked = 0
    authenticated = asyncio.Event()

    async def script(ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        if frame["type"] == "authenticate":
            return  # the renewal is never answered: it stays pending until close
        for _ in range(3):  # three expiry notices at once
            await _send(ws, frames.error(ErrorCode.TOKEN_EXPIRED, "renew"))
        await _send(ws, frames.pong(frame["id"]))

    def token() -> str:
        nonlocal asked
        asked += 1
        if asked > 1:
            authenticated.set()
        return "t"

    client = Client(await stand_in(script), token, reconnect=False)
    await client.connect()
    await client.ping()
    await asyncio.wait_for(authenticated.wait(), 10)
    await client.close()
    assert asked == 2


async def test_a_token_source_that_fails_on_renewal_does_not_break_close(stand_in, caplog):
    calls = 0

    async def script(ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        await _send(ws, frames.error(ErrorCode.TOKEN_EXPIRED, "renew"))
        await _send(ws, frames.pong(frame["id"]))

    def token() -> str:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("vault unreachable")
        return "t"

    client = Client(await stand_in(script), token, reconnect=False)
    await client.connect()
    await client.ping()
    for _ in range(100):
        if "token source raised" in caplog.text:
            break
        await asyncio.sleep(0.02)
    await client.close()
    assert calls == 2
    assert "token source raised" in caplog.text
