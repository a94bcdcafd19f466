"""Pipelined publishes: each acknowledged once, after JetStream, in order, nothing acked lost.

A connection's publishes are written without waiting for the previous ack, and
an HTTP batch's within a window; these tests send many at once from several
clients (WebSocket in both formats, and HTTP) and read the stream back
directly from JetStream.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import aiohttp
import nats
import orjson
import pytest

from neurelay.gateway.replying import MAX_HELD
from neurelay.protocol.channels import Channel, parse_channel, stored_subject
from neurelay.protocol.codecs import MSGPACK_SUBPROTOCOL

pytestmark = pytest.mark.timeout(120)


async def stored(nats_url: str, prefix: str, channel: str) -> list[tuple[int, dict[str, Any]]]:
    """(seq, envelope) of every message JetStream holds for `channel`, in stream order
    (conversation channels keep 1,000: all these tests publish)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        subject = stored_subject(prefix, parse_channel(channel))
        stream = await js.find_stream_name_by_subject(subject)
        info = await js.stream_info(stream)
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            message = await js.get_msg(stream, seq)
            if message.subject == subject:
                found.append((seq, orjson.loads(message.data or b"")))
        return found
    finally:
        await nc.close()


async def until(check: Callable[[], Any], what: str) -> None:
    """Wait until `check()` (or, when it gives an awaitable, its result) is true."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        outcome = check()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.02)


async def publish_all(client: Any, channel: str, ids: list[str]) -> list[dict[str, Any]]:
    """Send every publish frame before reading a reply; the replies, as many as frames."""
    for n, message_id in enumerate(ids):
        await client.send({"type": "publish", "channel": channel, "payload": n, "id": message_id})
    return [await client.recv(timeout=30) for _ in ids]


# Rates high enough that every publish of these tests is taken.
PLENTY = {"messages_per_second": 100_000, "burst": 100_000, "http_publish_burst": 1000}


async def test_concurrent_pipelined_publishers_are_acknowledged_once_each_and_stored_in_order(
    gateway_factory, make_config, connect, token, shared_nats, prefix
):
    gateway = await gateway_factory(make_config(limits=PLENTY))
    count = MAX_HELD * 2  # past the bound of replies a connection may hold
    clients = [
        await connect(gateway.ws_url, token(user=f"u{n}"), subprotocol=subprotocol)
        for n, subprotocol in enumerate(["neurelay.v1.json", MSGPACK_SUBPROTOCOL] * 2)
    ]
    channels = [f"conversation:p{n}" for n in range(len(clients))]
    ids = [[f"c{c}-{n}" for n in range(count)] for c in range(len(clients))]

    async def http_batches(session: aiohttp.ClientSession) -> list[dict[str, Any]]:
        results = []
        for b in range(3):
            body = [
                {"channel": "conversation:h", "payload": n, "id": f"h{b}-{n}"} for n in range(200)
            ]
            async with session.post(
                gateway.http_url + "/api/v1/publish",
                json=body,
                headers={"Authorization": f"Bearer {token(user='svc')}"},
            ) as response:
                assert response.status == 200
                results.extend((await response.json())["results"])
        return results

    async with aiohttp.ClientSession() as session:
        *replies, http_results = await asyncio.gather(
            *(publish_all(c, ch, i) for c, ch, i in zip(clients, channels, ids, strict=True)),
            http_batches(session),
        )

    for channel, sent, answered in zip(channels, ids, replies, strict=True):
        assert [r["type"] for r in answered] == ["published"] * count
        assert [r["id"] for r in answered] == sent  # one reply each, in the frames' order
        seqs = [r["seq"] for r in answered]
        assert seqs == sorted(set(seqs))
        in_stream = await stored(shared_nats.url, prefix, channel)
        assert [body["i"] for _, body in in_stream] == sent  # stored once each, in order
        assert [seq for seq, _ in in_stream] == seqs
    assert [r["id"] for r in http_results] == [f"h{b}-{n}" for b in range(3) for n in range(200)]
    assert not any("code" in r for r in http_results)
    in_stream = await stored(shared_nats.url, prefix, "conversation:h")
    assert [(seq, body["i"]) for seq, body in in_stream] == [
        (r["seq"], r["id"]) for r in http_results
    ]


async def test_replies_keep_the_order_of_the_frames_around_pipelined_publishes(
    gateway, connect, token
):
    client = await connect(gateway.ws_url, token())
    frames = [
        {"type": "publish", "channel": "agent:o", "payload": 1, "id": "p1"},
        {"type": "ping", "id": "ping"},
        {"type": "publish", "channel": "forbidden:o", "payload": 2, "id": "bad"},
        {"type": "publish", "channel": "agent:o", "payload": 3, "id": "p3"},
        {"type": "subscribe", "channel": "agent:o", "id": "sub"},
        {"type": "publish", "channel": "agent:o", "payload": 4, "id": "p4"},
        {"type": "publish", "channel": "agent:o", "payload": 4, "id": "p4"},
    ]
    for frame in frames:
        await client.send(frame)
    replies = []
    while len(replies) < len(frames):
        reply = await client.recv()
        if reply["type"] != "message":  # p4's delivery may come before or after its reply
            replies.append(reply)
    assert [r["id"] for r in replies] == [f["id"] for f in frames]
    assert [r["type"] for r in replies] == [
        "published",
        "pong",
        "error",
        "published",
        "subscribed",
        "published",
        "published",
    ]
    assert replies[-1]["duplicate"] is True
    assert replies[-1]["seq"] == replies[-2]["seq"]


async def test_no_publish_is_acknowledged_before_jetstream_acknowledges_it(
    proxy, shared_nats, make_config, gateway_factory, connect, token
):
    config = make_config(nats_url=proxy.url)
    running = await gateway_factory(config)
    client = await connect(running.ws_url, token())
    first = await client.request({"type": "publish", "channel": "agent:held", "payload": 0})

    proxy.hold_down()  # JetStream's acks stay in the proxy
    for n in range(1, 6):
        await client.send({"type": "publish", "channel": "agent:held", "payload": n, "id": n})
    await client.send({"type": "ping", "id": "after"})
    stream = Channel("agent", "held")

    async def all_stored() -> bool:
        return len(await stored(shared_nats.url, config.nats.subject_prefix, stream.name)) == 6

    await until(all_stored, "the publishes stored")
    await until(lambda: running.gateway.bus.publishes_in_flight == 5, "acks awaited")
    # Stored, but not acknowledged to the gateway: the client has had no reply, not even
    # the pong that came after the publishes.
    with pytest.raises(TimeoutError):
        await client.ws.receive(timeout=0.5)

    proxy.release_down()
    replies = [await client.recv() for _ in range(6)]
    assert [r["id"] for r in replies] == [1, 2, 3, 4, 5, "after"]
    assert [r["seq"] for r in replies[:5]] == list(range(first["seq"] + 1, first["seq"] + 6))


async def test_a_client_outpacing_the_acks_is_read_no_further_and_loses_no_reply(
    proxy, make_config, gateway_factory, connect, token
):
    running = await gateway_factory(make_config(nats_url=proxy.url, limits=PLENTY))
    client = await connect(running.ws_url, token())
    await client.request({"type": "publish", "channel": "agent:flood", "payload": 0})
    [connection] = running.gateway.connections

    proxy.hold_down()  # no ack comes: every reply after the publish waits for it
    await client.send({"type": "publish", "channel": "agent:flood", "payload": 1, "id": "p"})
    pings = MAX_HELD + 100
    for n in range(pings):
        await client.send({"type": "ping", "id": n})
    await until(lambda: connection._replies.held == MAX_HELD, "the replies held at the bound")
    await asyncio.sleep(0.2)  # the rest of the pings have had time to be read, were they read
    assert connection._replies.held == MAX_HELD

    proxy.release_down()
    replies = [await client.recv() for _ in range(1 + pings)]
    assert [r["id"] for r in replies] == ["p", *range(pings)]


async def test_nats_restarted_mid_publish_loses_nothing_acknowledged(
    own_nats, make_config, gateway_factory, connect, token
):
    config = make_config(
        nats_url=own_nats.url, nats={"request_timeout_seconds": 2.0}, limits=PLENTY
    )
    running = await gateway_factory(config)
    clients = [await connect(running.ws_url, token(user=f"r{n}")) for n in range(3)]
    acknowledged: dict[str, int] = {}
    refused: list[str] = []
    restarted = asyncio.Event()

    async def keep_publishing(index: int) -> None:
        client, channel = clients[index], f"conversation:r{index}"
        n = 0
        # Until well after the restart: some publishes before, some lost in it, some after.
        while not restarted.is_set() or n % 50:
            ids = [f"r{index}-{n + k}" for k in range(10)]
            n += 10
            for reply in await publish_all(client, channel, ids):
                if reply["type"] == "published":
                    acknowledged[reply["id"]] = reply["seq"]
                else:
                    assert reply["code"] == "unavailable", reply
                    refused.append(reply["id"])

    async def restart() -> None:
        await until(lambda: len(acknowledged) >= 60, "publishes before the outage")
        own_nats.stop()
        await until(lambda: not running.gateway.bus.connected, "the gateway cut off")
        await asyncio.sleep(0.3)  # publishes meet the outage
        own_nats.start()
        await until(lambda: running.gateway.bus.connected, "the gateway back")
        restarted.set()

    await asyncio.gather(restart(), *(keep_publishing(i) for i in range(3)))
    for index in range(3):
        in_stream = await stored(own_nats.url, config.nats.subject_prefix, f"conversation:r{index}")
        ids = [body["i"] for _, body in in_stream]
        assert len(ids) == len(set(ids))  # no message stored twice
        assert ids == sorted(ids, key=lambda i: int(i.split("-")[1]))  # in the order sent
        seq_of = {body["i"]: seq for seq, body in in_stream}
        mine = {i: s for i, s in acknowledged.items() if i.startswith(f"r{index}-")}
        assert {i: seq_of.get(i) for i in mine} == mine  # every acknowledged one, as acked
