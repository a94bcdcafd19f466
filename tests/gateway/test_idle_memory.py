"""An idle authenticated connection holds only what it needs: no HTTP parser, no cached
query (the token), no send queue, no writer task and no timer handle of its own."""

from __future__ import annotations

import asyncio

import pytest

from neurelay.gateway.deadlines import deadlines

pytestmark = pytest.mark.timeout(60)


async def test_an_idle_connection_keeps_no_http_phase_state_queue_or_task(gateway, connect, token):
    before = asyncio.all_tasks()
    client = await connect(gateway.ws_url + "?token=" + token())
    assert (await client.recv())["type"] == "authenticated"
    (connection,) = gateway.gateway.connections
    request = connection.request
    assert request.protocol._parser is None
    assert request._cache == {}
    assert len(connection.ws.headers) == 0  # sent with the upgrade, not kept
    assert len(request.protocol._messages) == 0
    assert request.protocol._messages.maxlen == 0
    assert connection.outbox._frames is None
    assert connection.outbox._writer is None
    assert deadlines()._where[connection] is not None  # token expiry, on the shared timer
    assert not hasattr(connection, "__dict__")
    assert not hasattr(connection.session, "__dict__")
    # aiohttp's own two tasks per connection, none of ours.
    assert len(asyncio.all_tasks() - before) == 2


async def test_a_connection_that_was_sent_a_burst_returns_to_idle(
    gateway_factory, make_config, connect, token
):
    running = await gateway_factory(make_config(limits={"messages_per_second": 10_000}))
    client = await connect(running.ws_url, token())
    publisher = await connect(running.ws_url, token(user="pub"))
    await client.request({"type": "subscribe", "channel": "agent:burst"})
    # Megabytes while the client reads nothing: more than the socket buffers, so some queue.
    for _ in range(120):
        await publisher.send({"type": "publish", "channel": "agent:burst", "payload": "z" * 60_000})
    received = 0
    while received < 120:
        if (await client.recv())["type"] == "message":
            received += 1
    connection = next(c for c in running.gateway.connections if c.session.principal.user == "alice")
    for _ in range(100):
        if connection.outbox._writer is None:
            break
        await asyncio.sleep(0.02)
    assert connection.outbox._frames is None
    assert connection.outbox._writer is None
