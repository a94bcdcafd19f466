"""A slow consumer's grace period is a real bound, counted from the overflow.

The gateway writes the 4005 close frame right behind what the client's
socket holds; what the kernel holds there (megabytes on a fast link) used to
be delivered at the client's pace however long that took, so a trickle
reader learned 4005 over a minute after the overflow. Now a client that has
not read up to the close frame when the grace period ends finds its
connection reset; one that has read up to it was closed normally meanwhile
(tests/abuse/test_slow_consumers.py). A bystander on the same gateway loses
nothing, and the gateway holds no socket afterwards. Held sockets are
descriptors the doorman does not count: beyond a few dozen, a slow consumer
is reset at once.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest

from neurelay.gateway import connection, lingering
from tests.abuse.bystander import Bystander
from tests.abuse.rawws import CLOSE, RawWebSocket, raw_websocket

__all__ = ["raw_websocket"]  # the fixture

GRACE = 1.0
_TCP_CLOSE = 7  # tcpi_state of a socket the peer has reset


def _slow_consumers(running: Any) -> float:
    value = running.gateway.metrics.registry.get_sample_value("neurelay_slow_consumers_total")
    return float(value or 0.0)


def _tcp_state(client: RawWebSocket) -> int:
    sock = client.writer.get_extra_info("socket")
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


async def _until(condition: Callable[[], bool], attempts: int = 3000) -> None:
    # A bound of 30 s, thirty grace periods: reached only when the gateway never cuts.
    for _ in range(attempts):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def _read_to_the_end(client: RawWebSocket) -> int | None:
    """Read everything the client was sent; the close code, or None when there was none."""
    try:
        while True:
            opcode, payload = await client.receive()
            if opcode == CLOSE:
                return int.from_bytes(payload[:2], "big")
    except (asyncio.IncompleteReadError, ConnectionResetError):
        return None


async def _overflowed_victim(
    make_config: Any, gateway_factory: Any, connect: Any, token: Any, raw_websocket: Any
) -> tuple[Any, Bystander, RawWebSocket]:
    """A gateway, a bystander on it, and a victim it has just cut off as a slow consumer."""
    limits = {
        "send_queue_bytes": 256 * 1024,
        "replay_bytes": 256 * 1024,
        "messages_per_second": 10_000,
        # Raw clients here do not answer pings; the heartbeat must not be what cuts them.
        "heartbeat_seconds": 600,
    }
    running = await gateway_factory(make_config(limits=limits))
    bystander = await Bystander(connect, running.ws_url, token(user="bystander")).start()
    victim: RawWebSocket = await raw_websocket(running.port, receive_buffer=4096)
    await victim.send({"type": "authenticate", "token": token(user="sloth"), "id": 1})
    assert (await victim.receive_json())["type"] == "authenticated"
    await victim.send({"type": "subscribe", "channel": "agent:flood", "id": 2})
    assert (await victim.receive_json())["type"] == "subscribed"
    publisher = await connect(running.ws_url, token(user="publisher"))
    payload = "x" * 30_000
    while _slow_consumers(running) < 1:
        frame = {"type": "publish", "channel": "agent:flood", "payload": payload}
        reply = await publisher.request(frame)
        assert reply["type"] == "published", reply
    return running, bystander, victim


async def test_a_slow_consumer_that_has_not_read_up_to_4005_by_the_deadline_is_reset(
    make_config: Any,
    gateway_factory: Any,
    connect: Any,
    token: Any,
    raw_websocket: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection, "SLOW_CONSUMER_GRACE_SECONDS", GRACE)
    running, bystander, victim = await _overflowed_victim(
        make_config, gateway_factory, connect, token, raw_websocket
    )
    # The victim reads nothing more: what the gateway wrote after the first few frames
    # waits in the gateway's socket, the close frame last, until the deadline.
    await _until(lambda: _tcp_state(victim) == _TCP_CLOSE)

    assert await _read_to_the_end(victim) is None
    assert len(running.gateway.lingering) == 0
    await bystander.finish()
    assert not bystander.refused


async def test_slow_consumers_beyond_those_the_gateway_holds_are_reset_at_once(
    make_config: Any,
    gateway_factory: Any,
    connect: Any,
    token: Any,
    raw_websocket: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A grace period longer than the test: only the cap can cut the victim.
    monkeypatch.setattr(connection, "SLOW_CONSUMER_GRACE_SECONDS", 3600.0)
    monkeypatch.setattr(lingering, "MAX_HELD", 0)
    running, bystander, victim = await _overflowed_victim(
        make_config, gateway_factory, connect, token, raw_websocket
    )
    await _until(lambda: _tcp_state(victim) == _TCP_CLOSE)

    assert await _read_to_the_end(victim) is None
    assert len(running.gateway.lingering) == 0
    await bystander.finish()
    assert not bystander.refused
