"""Gateway processes as users run them: several replicas, restarts, drain, hot reload."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable

import aiohttp
import pytest

from neurelay.client import Client
from neurelay.protocol.codes import CloseCode
from tests.support.processes import GatewayProcess

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


async def test_message_published_on_one_replica_reaches_subscribers_on_the_other(
    gateway_process: Callable[..., GatewayProcess], connect, token
):
    first = await gateway_process("a").start()
    second = await gateway_process("b").start()
    subscriber = await connect(second.ws_url, token(user="bob"))
    await subscriber.request({"type": "subscribe", "channel": "conversation:x"})
    publisher = await connect(first.ws_url, token())
    ack = await publisher.request(
        {"type": "publish", "channel": "conversation:x", "payload": "across"}
    )
    message = await subscriber.recv()
    assert (message["payload"], message["seq"]) == ("across", ack["seq"])


async def test_connection_limit_holds_across_replicas(
    gateway_process: Callable[..., GatewayProcess], connect, token
):
    limits = {"connections_per_user": 2}
    first = await gateway_process("a", limits=limits).start()
    second = await gateway_process("b", limits=limits).start()
    await connect(first.ws_url, token())
    await connect(second.ws_url, token())
    for replica in (first, second):
        third = await connect(replica.ws_url)
        reply = await third.request({"type": "authenticate", "token": token()})
        assert reply["code"] == "too_many_connections"


async def test_client_resumes_without_gap_or_duplicate_across_a_gateway_restart(
    gateway_process: Callable[..., GatewayProcess], token
):
    replica = await gateway_process("a").start()
    backend = await gateway_process("backend").start()
    async with (
        Client(replica.ws_url, token(), backoff_initial=0.05, backoff_max=0.5) as client,
        Client(backend.ws_url, token(user="svc")) as publisher,
    ):
        subscription = await client.subscribe("agent:r")
        sent = [await publisher.publish("agent:r", n) for n in range(5)]
        first = [await subscription.get(timeout=10) for _ in range(5)]
        replica.kill()
        sent += [await publisher.publish("agent:r", n) for n in range(5, 10)]
        await replica.start()
        sent += [await publisher.publish("agent:r", n) for n in range(10, 15)]
        rest = [await subscription.get(timeout=20) for _ in range(10)]
        received = first + rest
        assert [m.payload for m in received] == list(range(15))
        assert [m.seq for m in received] == [p.seq for p in sent]
        assert client.reconnects >= 1


async def test_sigterm_drains_with_1012_and_exits(
    gateway_process: Callable[..., GatewayProcess], token
):
    replica = await gateway_process("a", drain={"period_seconds": 1.5}).start()
    async with aiohttp.ClientSession() as http:
        sockets = [
            await http.ws_connect(replica.ws_url + "?token=" + token(user=f"u{n}"))
            for n in range(4)
        ]
        for ws in sockets:
            assert (await ws.receive_json())["type"] == "authenticated"
        replica.signal(signal.SIGTERM)
        statuses = []
        for _ in range(50):  # the signal is handled asynchronously
            async with http.get(replica.http_url + "/readyz") as response:
                statuses.append(response.status)
            if statuses[-1] == 503:
                break
            await asyncio.sleep(0.02)
        assert statuses[-1] == 503

        async def close_code(ws: aiohttp.ClientWebSocketResponse) -> int | None:
            msg = await ws.receive(timeout=15)
            assert msg.type is aiohttp.WSMsgType.CLOSE, msg
            return int(msg.data)  # the code the server sent, whatever became of our reply

        codes = await asyncio.gather(*(close_code(ws) for ws in sockets))
    assert codes == [CloseCode.SERVICE_RESTART] * 4
    assert await replica.wait_exit() == 0


async def test_changed_configuration_file_applies_without_restart_or_dropped_connections(
    gateway_process: Callable[..., GatewayProcess], connect, token
):
    replica = await gateway_process("a").start()
    client = await connect(replica.ws_url, token(channels=("agent:*", "tasks:*")))
    assert (await client.request({"type": "subscribe", "channel": "agent:1"}))["type"] == (
        "subscribed"
    )
    refused = await client.request({"type": "subscribe", "channel": "tasks:1"})
    assert refused["code"] == "invalid_channel"

    config = dict(replica.config)
    config["limits"] = {"subscriptions_per_connection": 2}
    config["namespaces"] = {
        "agent": {"history_messages": 10},
        "tasks": {"history_messages": 5},
        "system": {"history_messages": 10},
    }
    replica.write_config(config)
    for _ in range(100):
        reply = await client.request({"type": "subscribe", "channel": "tasks:1"})
        if reply["type"] == "subscribed":
            break
        await asyncio.sleep(0.1)
    assert reply["type"] == "subscribed"
    limited = await client.request({"type": "subscribe", "channel": "agent:2"})
    assert limited["code"] == "too_many_subscriptions"
    assert (await client.request({"type": "ping"}))["type"] == "pong"  # never dropped

    replica.write_config({**config, "limits": {"subscriptions_per_connection": "many"}})
    await asyncio.sleep(1.0)
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    still = await client.request({"type": "subscribe", "channel": "agent:2"})
    assert still["code"] == "too_many_subscriptions"  # the invalid file was not applied
    assert "configuration not reloaded" in replica.log_path.read_text()


async def test_process_logs_json_lines_with_correlation_ids_and_runs_on_uvloop(
    gateway_process: Callable[..., GatewayProcess], connect, token
):
    replica = await gateway_process("a").start()
    client = await connect(replica.ws_url, token())
    await client.request({"type": "subscribe", "channel": "user:bob", "id": "corr-7"})
    replica.stop()
    entries = [json.loads(line) for line in replica.log_path.read_text().splitlines()]
    listening = next(e for e in entries if e["message"] == "listening")
    assert listening["loop"].startswith("uvloop")
    refusal = next(e for e in entries if e.get("code") == "forbidden")
    assert refusal["frame_id"] == "corr-7"
    assert refusal["connection"]
    assert {"time", "level", "logger", "message"} <= refusal.keys()
