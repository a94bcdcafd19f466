"""NATS outages: clients stay connected, publishes answer unavailable, nothing is lost."""

from __future__ import annotations

import asyncio

import aiohttp
import nats
import pytest

from neurelay.protocol.channels import Channel, stored_subject

pytestmark = pytest.mark.timeout(90)


async def _until(predicate, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_nats_stopped_and_restarted_while_clients_stay_connected(
    own_nats, make_config, gateway_factory, connect, token
):
    running = await gateway_factory(make_config(nats_url=own_nats.url))
    subscriber = await connect(running.ws_url, token())
    await subscriber.request({"type": "subscribe", "channel": "agent:o"})
    before = await subscriber.request({"type": "publish", "channel": "agent:o", "payload": "a"})
    assert (await subscriber.recv())["seq"] == before["seq"]

    own_nats.stop()
    await _until(lambda: not running.gateway.bus.connected)
    refused = await subscriber.request({"type": "publish", "channel": "agent:o", "payload": "b"})
    assert refused["code"] == "unavailable"
    assert (await subscriber.request({"type": "ping"}))["type"] == "pong"
    async with aiohttp.ClientSession() as http:
        async with http.get(running.http_url + "/readyz") as response:
            assert response.status == 503
        async with http.get(running.http_url + "/healthz") as response:
            assert response.status == 200

    own_nats.start()
    await _until(lambda: running.gateway.bus.connected)
    after = await subscriber.request({"type": "publish", "channel": "agent:o", "payload": "c"})
    assert after["type"] == "published"
    message = await subscriber.recv()
    assert (message["payload"], message["seq"]) == ("c", after["seq"])


async def test_messages_stored_while_the_gateway_was_cut_off_are_delivered_in_order_once(
    proxy, shared_nats, make_config, gateway_factory, connect, token
):
    config = make_config(nats_url=proxy.url)
    running = await gateway_factory(config)
    subscriber = await connect(running.ws_url, token())
    await subscriber.request({"type": "subscribe", "channel": "agent:gap"})
    first = await subscriber.request({"type": "publish", "channel": "agent:gap", "payload": 0})
    assert (await subscriber.recv())["seq"] == first["seq"]

    proxy.cut()
    await _until(lambda: not running.gateway.bus.connected)
    direct = await nats.connect(shared_nats.url)
    js = direct.jetstream()
    subject = stored_subject(config.nats.subject_prefix, Channel("agent", "gap"))
    missed = []
    for n in (1, 2, 3):
        body = b'{"p": %d, "i": null, "t": 0, "u": "backend"}' % n
        missed.append((await js.publish(subject, body)).seq)
    await direct.close()
    proxy.restore()

    received = [await subscriber.recv(timeout=20) for _ in missed]
    assert [m["seq"] for m in received] == missed
    assert [m["payload"] for m in received] == [1, 2, 3]
    after = await subscriber.request({"type": "publish", "channel": "agent:gap", "payload": 4})
    message = await subscriber.recv()
    assert message["seq"] == after["seq"]  # nothing delivered twice in between
