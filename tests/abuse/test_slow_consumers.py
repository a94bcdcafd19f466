"""Clients that stop reading, or read a trickle: cut off with 4005, which they still learn.

The gateway drops such a client's queue and writes the 4005 close frame right
behind what its socket already holds, so when the client reads again it
finds whole frames and then the close frame, not a bare end of stream. A
bystander on the same gateway loses nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.abuse.bystander import Bystander, scaled
from tests.abuse.rawws import RawWebSocket, raw_websocket

__all__ = ["raw_websocket"]  # the fixture


def _slow_consumers(running: Any) -> float:
    value = running.gateway.metrics.registry.get_sample_value("neurelay_slow_consumers_total")
    return float(value or 0.0)


async def _victim(raw_websocket: Any, running: Any, token: str, channel: str) -> RawWebSocket:
    victim: RawWebSocket = await raw_websocket(running.port, receive_buffer=4096)
    await victim.send({"type": "authenticate", "token": token, "id": 1})
    assert (await victim.receive_json())["type"] == "authenticated"
    await victim.send({"type": "subscribe", "channel": channel, "id": 2})
    assert (await victim.receive_json())["type"] == "subscribed"
    return victim


async def _flood_until_cut_off(running: Any, publisher: Any, channel: str, count: int = 1) -> None:
    payload = "x" * 30_000
    before = _slow_consumers(running)
    while _slow_consumers(running) < before + count:
        reply = await publisher.request({"type": "publish", "channel": channel, "payload": payload})
        assert reply["type"] == "published", reply


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_a_client_that_stops_reading_finds_the_4005_close_frame_when_it_reads_again(
    make_config: Any, gateway_factory: Any, connect: Any, token: Any, raw_websocket: Any
) -> None:
    limits = {
        "send_queue_bytes": 256 * 1024,
        "replay_bytes": 256 * 1024,
        "messages_per_second": 10_000,
        # Raw clients here do not answer pings; the heartbeat must not be what cuts them.
        "heartbeat_seconds": 600,
    }
    running = await gateway_factory(make_config(limits=limits))
    bystander = await Bystander(connect, running.ws_url, token(user="bystander")).start()
    victim = await _victim(raw_websocket, running, token(user="sloth"), "agent:flood")
    publisher = await connect(running.ws_url, token(user="publisher"))

    await _flood_until_cut_off(running, publisher, "agent:flood")
    # Read again only once the gateway is done with the connection.
    await _until(lambda: len(running.gateway.connections) == 2)

    assert await victim.close_code() == 4005
    await bystander.finish()


async def test_a_trickle_reading_client_is_cut_off_with_4005(
    make_config: Any, gateway_factory: Any, connect: Any, token: Any, raw_websocket: Any
) -> None:
    limits = {
        "send_queue_bytes": 256 * 1024,
        "replay_bytes": 256 * 1024,
        "messages_per_second": 10_000,
        # Raw clients here do not answer pings; the heartbeat must not be what cuts them.
        "heartbeat_seconds": 600,
    }
    running = await gateway_factory(make_config(limits=limits))
    bystander = await Bystander(connect, running.ws_url, token(user="bystander")).start()
    victims = [
        await _victim(raw_websocket, running, token(user=f"trickle{n}"), "agent:trickle")
        for n in range(scaled(2, 20))
    ]
    publisher = await connect(running.ws_url, token(user="publisher"))

    async def trickle(victim: RawWebSocket) -> int:
        while True:
            opcode, payload = await victim.receive()
            if opcode == 0x8:
                return int.from_bytes(payload[:2], "big")
            await asyncio.sleep(0.05)

    readers = [asyncio.create_task(trickle(v)) for v in victims]
    await _flood_until_cut_off(running, publisher, "agent:trickle", len(victims))
    codes = await asyncio.gather(*readers)

    assert codes == [4005] * len(victims)
    await bystander.finish()
