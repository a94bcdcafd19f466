"""Frames and upgrades that break the rules: unmasked frames, huge integers, empty nesting,
and origins that only look allowed.

Each attack is refused (close 1002, `bad_request`, HTTP 403) and a bystander
on the same gateway keeps publishing and receiving without losing anything.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from typing import Any

import aiohttp
import orjson
import pytest

from tests.abuse.bystander import Bystander
from tests.abuse.rawws import CLOSE, RawWebSocket, raw_websocket

__all__ = ["raw_websocket"]  # the fixture

PING = b'{"type":"ping","id":"p"}'


def _unmasked(payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes((0x81, len(payload))) + payload


def _masked(payload: bytes) -> bytes:
    assert len(payload) < 126
    mask = os.urandom(4)
    return (
        bytes((0x81, 0x80 | len(payload)))
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )


async def _next_close_code(client: RawWebSocket) -> int:
    """The very next server frame must be the close frame: nothing was answered before it."""
    opcode, payload = await client.receive()
    assert opcode == CLOSE, (opcode, payload[:200])
    code: int = struct.unpack("!H", payload[:2])[0]
    return code


async def test_an_unmasked_frame_closes_the_connection_with_1002(
    gateway: Any, connect: Any, token: Any, raw_websocket: Any
) -> None:
    bystander = await Bystander(connect, gateway.ws_url, token(user="bystander")).start()
    attacker: RawWebSocket = await raw_websocket(gateway.port)
    await attacker.send({"type": "authenticate", "token": token(user="mallory"), "id": 1})
    assert (await attacker.receive_json())["type"] == "authenticated"

    attacker.writer.write(_unmasked(PING))
    await attacker.writer.drain()

    assert await _next_close_code(attacker) == 1002
    await bystander.finish()


async def test_an_unmasked_frame_sent_along_with_the_upgrade_request_closes_with_1002(
    gateway: Any, connect: Any, token: Any
) -> None:
    bystander = await Bystander(connect, gateway.ws_url, token(user="bystander")).start()
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    try:
        writer.write(upgrade + _unmasked(PING))  # one write: the frame arrives with the request
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

        assert await _next_close_code(RawWebSocket(reader, writer)) == 1002
    finally:
        writer.close()
    await bystander.finish()


async def test_masked_frames_arriving_a_byte_at_a_time_are_served(
    gateway: Any, connect: Any, token: Any, raw_websocket: Any
) -> None:
    client: RawWebSocket = await raw_websocket(gateway.port)
    for byte in _masked(PING):
        client.writer.write(bytes((byte,)))
        await client.writer.drain()

    assert (await client.receive_json()) == {"type": "pong", "id": "p"}


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.com/.example.com",
        "https://evil.com?.example.com",
        "https://evil.com#.example.com",
        "https://mallory@app.example.com",
        "http://app.example.com",
    ],
)
async def test_an_origin_that_only_looks_allowed_is_refused_with_403(
    gateway_factory: Any, make_config: Any, connect: Any, token: Any, origin: str
) -> None:
    running = await gateway_factory(make_config(allowed_origins=["https://*.example.com"]))
    bystander = await Bystander(connect, running.ws_url, token(user="bystander")).start()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(running.ws_url, headers={"Origin": origin})
        assert info.value.status == 403
        allowed = await session.ws_connect(
            running.ws_url, headers={"Origin": "https://app.example.com"}
        )
        await allowed.close()
    await bystander.finish()


@pytest.mark.parametrize("literal", ["18446744073709551616", "-9223372036854775809", "9" * 300])
async def test_an_integer_beyond_64_bits_is_refused_and_subscribers_never_see_a_float(
    gateway: Any, connect: Any, token: Any, literal: str
) -> None:
    bystander = await Bystander(connect, gateway.ws_url, token(user="bystander")).start()
    subscriber = await connect(gateway.ws_url, token(user="reader"))
    await subscriber.request({"type": "subscribe", "channel": "agent:numbers"})
    attacker = await connect(gateway.ws_url, token(user="mallory"))
    raw = '{"type":"publish","channel":"agent:numbers","id":"big","payload":{"n":' + literal + "}}"

    await attacker.ws.send_str(raw)
    reply = await attacker.recv()
    assert (reply["type"], reply["code"]) == ("error", "bad_request")  # unread, so no id
    assert "64 bits" in reply["message"]

    await attacker.request({"type": "publish", "channel": "agent:numbers", "payload": {"n": 1}})
    message = await subscriber.recv()
    assert message["payload"] == {"n": 1}  # the refused one never reached anybody
    await bystander.finish()


async def test_an_integer_beyond_64_bits_is_refused_by_the_http_api(
    gateway: Any, connect: Any, token: Any
) -> None:
    bystander = await Bystander(connect, gateway.ws_url, token(user="bystander")).start()
    body = b'{"channel":"agent:numbers","payload":18446744073709551616}'
    headers = {"Authorization": f"Bearer {token()}", "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(gateway.http_url + "/api/v1/publish", data=body, headers=headers) as response,
    ):
        assert response.status == 400
        assert (await response.json())["code"] == "bad_request"
    await bystander.finish()


@pytest.mark.parametrize("empty", ["[]", "{}"])
async def test_33_levels_of_nesting_ending_in_an_empty_container_are_refused(
    gateway: Any, connect: Any, token: Any, empty: str
) -> None:
    bystander = await Bystander(connect, gateway.ws_url, token(user="bystander")).start()
    attacker = await connect(gateway.ws_url, token(user="mallory"))
    payload = "[" * 32 + empty + "]" * 32
    frame = '{"type":"publish","channel":"agent:deep","id":"deep","payload":' + payload + "}"
    assert orjson.loads(frame)  # well-formed JSON, only too deep

    await attacker.ws.send_str(frame)
    reply = await attacker.recv()

    assert (reply["type"], reply["code"]) == ("error", "bad_request")
    await bystander.finish()
