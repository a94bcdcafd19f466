"""NATS's max_payload: a publish is measured as NATS measures it, headers included.

NATS drops the whole connection on a message over its max_payload, so a
frame whose envelope and `Nats-Msg-Id` header together pass it must be
refused before it is written, and a gateway whose NATS connection was
closed for good must dial a new one and deliver again.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from neurelay.gateway import envelopes
from neurelay.jetstream.publishing import nats_size
from neurelay.protocol.channels import Channel
from tests.conftest import SMALL_MAX_PAYLOAD

pytestmark = pytest.mark.timeout(60)


def payload_of_nats_size(size: int, message_id: str, user: str) -> str:
    """A payload whose envelope, with its `Nats-Msg-Id`, is `size` bytes as NATS counts them."""
    # The key is a fixed-length digest, whatever the channel.
    key = envelopes.dedup_key(user, Channel("agent", "big"), message_id)
    assert key is not None
    headers = {"Nats-Msg-Id": key}
    # The gateway's receive time in milliseconds has 13 digits until the year 2286.
    empty = nats_size(envelopes.encode("", message_id, 10**12, user), headers)
    return "x" * (size - empty)


async def test_a_publish_one_byte_over_max_payload_with_its_header_is_refused_and_nats_stays(
    small_nats, make_config, gateway_factory, connect, token
):
    running = await gateway_factory(make_config(nats_url=small_nats.url))
    client = await connect(running.ws_url, token(user="alice"))
    await client.request({"type": "subscribe", "channel": "agent:big"})
    fits = payload_of_nats_size(SMALL_MAX_PAYLOAD, "fits", "alice")
    over = payload_of_nats_size(SMALL_MAX_PAYLOAD + 1, "over", "alice")

    # The envelope alone is under max_payload: only its header takes it over.
    assert len(envelopes.encode(over, "over", 10**12, "alice")) < SMALL_MAX_PAYLOAD
    refused = await client.request(
        {"type": "publish", "channel": "agent:big", "payload": over, "id": "over"}
    )
    assert (refused["type"], refused["code"], refused["id"]) == (
        "error",
        "message_too_large",
        "over",
    )
    stored = await client.request(
        {"type": "publish", "channel": "agent:big", "payload": fits, "id": "fits"}
    )
    assert stored["type"] == "published"
    after = await client.request(
        {"type": "publish", "channel": "agent:big", "payload": "after", "id": "after"}
    )
    assert after["type"] == "published"
    received = [await client.recv() for _ in range(2)]
    assert [(m["id"], m["seq"]) for m in received] == [
        ("fits", stored["seq"]),
        ("after", after["seq"]),
    ]
    assert running.gateway.bus.disconnects == 0


async def until(predicate, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_a_gateway_whose_nats_connection_is_closed_for_good_connects_anew_and_delivers(
    small_nats, make_config, gateway_factory, connect, token
):
    running = await gateway_factory(make_config(nats_url=small_nats.url))
    bus = running.gateway.bus
    client = await connect(running.ws_url, token())
    await client.request({"type": "subscribe", "channel": "agent:on"})
    before = await client.request({"type": "publish", "channel": "agent:on", "payload": "a"})
    assert (await client.recv())["seq"] == before["seq"]

    # Written around the gateway: nats-py checks the body alone, the server drops the
    # connection for body and header, and nats-py closes the client for good.
    closed = bus._nc
    await closed.publish("elsewhere", b"x" * (closed.max_payload - 8), headers={"H": "y" * 64})
    await until(lambda: closed.is_closed)
    await until(lambda: bus.connected and bus.reconnects == 1)

    after = await client.request({"type": "publish", "channel": "agent:on", "payload": "b"})
    assert after["type"] == "published"
    message = await client.recv()
    assert (message["payload"], message["seq"]) == ("b", after["seq"])
    async with aiohttp.ClientSession() as http, http.get(running.http_url + "/readyz") as ready:
        assert ready.status == 200
