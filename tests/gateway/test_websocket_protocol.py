"""Every protocol rule of docs/protocol.md, over real WebSockets to a loopback gateway."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from neurelay.protocol.codecs import MSGPACK_SUBPROTOCOL
from neurelay.protocol.codes import CloseCode

pytestmark = pytest.mark.timeout(60)


async def test_authenticate_frame_answers_user_and_expiry(gateway, connect, token):
    client = await connect(gateway.ws_url)
    reply = await client.request({"type": "authenticate", "token": token(ttl=600)})
    assert reply["type"] == "authenticated"
    assert reply["user"] == "alice"
    assert abs(reply["expires_at"] / 1000 - (time.time() + 600)) < 5


async def test_ping_is_answered_before_authentication(gateway, connect):
    client = await connect(gateway.ws_url)
    assert await client.request({"type": "ping", "id": 7}) == {"type": "pong", "id": 7}


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "subscribe", "channel": "agent:1"},
        {"type": "unsubscribe", "channel": "agent:1"},
        {"type": "publish", "channel": "agent:1", "payload": 1},
    ],
)
async def test_frames_other_than_authenticate_and_ping_need_authentication(gateway, connect, frame):
    client = await connect(gateway.ws_url)
    reply = await client.request(dict(frame))
    assert reply["type"] == "error"
    assert reply["code"] == "unauthenticated"


async def test_bad_token_in_frame_is_auth_failed_and_connection_survives(gateway, connect, token):
    client = await connect(gateway.ws_url)
    reply = await client.request({"type": "authenticate", "token": "not-a-jwt"})
    assert reply["code"] == "auth_failed"
    again = await client.request({"type": "authenticate", "token": token()})
    assert again["type"] == "authenticated"


async def test_expired_token_in_frame_is_token_expired(gateway, connect, token):
    client = await connect(gateway.ws_url)
    reply = await client.request({"type": "authenticate", "token": token(ttl=-10)})
    assert reply["code"] == "token_expired"


@pytest.mark.parametrize("where", ["header", "query"])
async def test_bad_token_at_upgrade_gets_http_401_not_an_upgrade(gateway, where):
    async with aiohttp.ClientSession() as session:
        url = gateway.ws_url + ("?token=garbage" if where == "query" else "")
        headers = {"Authorization": "Bearer garbage"} if where == "header" else {}
        with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
            await session.ws_connect(url, headers=headers)
    assert raised.value.status == 401


async def test_token_at_upgrade_authenticates_the_connection(gateway, connect, token):
    client = await connect(gateway.ws_url + "?token=" + token(user="carol"))
    first = await client.recv()
    assert first["type"] == "authenticated"
    assert first["user"] == "carol"
    reply = await client.request({"type": "subscribe", "channel": "agent:1"})
    assert reply["type"] == "subscribed"


async def test_publish_is_acknowledged_and_delivered_to_every_subscriber_including_publisher(
    gateway, connect, token
):
    publisher = await connect(gateway.ws_url, token())
    other = await connect(gateway.ws_url, token(user="bob"))
    for client in (publisher, other):
        reply = await client.request({"type": "subscribe", "channel": "agent:a1"})
        assert reply == {
            "type": "subscribed",
            "id": reply["id"],
            "channel": "agent:a1",
            "seq": 0,
            "recovered": True,
        }
    ack = await publisher.request(
        {"type": "publish", "channel": "agent:a1", "payload": {"status": "busy"}, "id": "m1"}
    )
    assert ack["type"] == "published"
    assert ack["channel"] == "agent:a1"
    assert ack["seq"] >= 1
    for client in (publisher, other):
        message = await client.recv()
        while message["type"] != "message":
            message = await client.recv()
        assert message["channel"] == "agent:a1"
        assert message["payload"] == {"status": "busy"}
        assert message["seq"] == ack["seq"]
        assert message["id"] == "m1"
        assert abs(message["timestamp"] / 1000 - time.time()) < 30


async def test_unsubscribe_stops_delivery_and_second_unsubscribe_is_not_subscribed(
    gateway, connect, token
):
    client = await connect(gateway.ws_url, token())
    await client.request({"type": "subscribe", "channel": "agent:u"})
    reply = await client.request({"type": "unsubscribe", "channel": "agent:u"})
    assert reply["type"] == "unsubscribed"
    assert reply["channel"] == "agent:u"
    await client.request({"type": "publish", "channel": "agent:u", "payload": 1})
    pong = await client.request({"type": "ping"})
    assert pong["type"] == "pong"  # no message arrived before it
    again = await client.request({"type": "unsubscribe", "channel": "agent:u"})
    assert again["code"] == "not_subscribed"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "subscribe", "channel": "conversation:other"}, None),
        ({"type": "subscribe", "channel": "user:bob"}, "forbidden"),
        ({"type": "subscribe", "channel": "user:alice"}, None),
        ({"type": "subscribe", "channel": "system"}, None),
        ({"type": "publish", "channel": "user:alice", "payload": 1}, "forbidden"),
        ({"type": "publish", "channel": "system", "payload": 1}, None),
        ({"type": "subscribe", "channel": "agent:*"}, "invalid_channel"),
        ({"type": "subscribe", "channel": "agent.>"}, "invalid_channel"),
        ({"type": "subscribe", "channel": "agent:a.b"}, "invalid_channel"),
        ({"type": "subscribe", "channel": "agent: x"}, "invalid_channel"),
        ({"type": "subscribe", "channel": "payments:1"}, "invalid_channel"),
        ({"type": "publish", "channel": ">", "payload": 1}, "invalid_channel"),
    ],
)
async def test_channel_authorization_and_grammar(gateway, connect, token, frame, code):
    client = await connect(gateway.ws_url, token())
    reply = await client.request(dict(frame))
    if code is None:
        assert reply["type"] in ("subscribed", "published"), reply
    else:
        assert reply["type"] == "error"
        assert reply["code"] == code
        assert reply["id"] == reply["id"]


async def test_patterns_in_claims_decide_other_namespaces(gateway, connect, token):
    client = await connect(gateway.ws_url, token(channels=("agent:42",), publish=()))
    assert (await client.request({"type": "subscribe", "channel": "agent:42"}))["type"] == (
        "subscribed"
    )
    refused = await client.request({"type": "subscribe", "channel": "agent:43"})
    assert refused["code"] == "forbidden"
    assert refused["channel"] == "agent:43"
    refused = await client.request({"type": "publish", "channel": "agent:42", "payload": 1})
    assert refused["code"] == "forbidden"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "bad_request"),
        ("[1, 2]", "bad_request"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "ping", "extra": 1}', "bad_request"),
        ('{"type": "subscribe"}', "bad_request"),
        ('{"type": "subscribe", "channel": 5}', "invalid_channel"),
        ('{"type": "subscribe", "channel": "agent:1", "since": -1}', "bad_request"),
        ('{"type": "subscribe", "channel": "agent:1", "since": 1, "last": 1}', "bad_request"),
        ('{"type": "publish", "channel": "agent:1"}', "bad_request"),
        (
            '{"type": "publish", "channel": "agent:1", "payload": ' + "[" * 40 + "]" * 40 + "}",
            "bad_request",
        ),
        ('{"type": "authenticate", "token": ""}', "bad_request"),
        ('{"type": "ping", "id": ' + '"' + "x" * 500 + '"}', "bad_request"),
    ],
)
async def test_malformed_frames_get_an_error_and_the_connection_survives(
    gateway, connect, token, raw, code
):
    client = await connect(gateway.ws_url, token())
    await client.ws.send_str(raw)
    reply = await client.recv()
    assert reply["type"] == "error"
    assert reply["code"] == code
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_error_echoes_the_frame_id(gateway, connect, token):
    client = await connect(gateway.ws_url, token())
    await client.send({"type": "subscribe", "channel": "agent:*", "id": "abc"})
    reply = await client.recv()
    assert reply["id"] == "abc"
    assert reply["channel"] == "agent:*"


async def test_too_many_subscriptions(gateway_factory, make_config, connect, token):
    running = await gateway_factory(make_config(limits={"subscriptions_per_connection": 2}))
    client = await connect(running.ws_url, token())
    for n in (1, 2):
        assert (await client.request({"type": "subscribe", "channel": f"agent:{n}"}))["type"] == (
            "subscribed"
        )
    again = await client.request({"type": "subscribe", "channel": "agent:1"})
    assert again["type"] == "subscribed"  # the same channel again is not one more
    reply = await client.request({"type": "subscribe", "channel": "agent:3"})
    assert reply["code"] == "too_many_subscriptions"


async def test_oversized_frame_is_refused_before_parsing_and_connection_survives(
    gateway_factory, make_config, connect, token
):
    running = await gateway_factory(make_config(limits={"max_message_bytes": 1024}))
    client = await connect(running.ws_url, token())
    await client.ws.send_str("{" + "x" * 5000)  # not even JSON: size is checked first
    reply = await client.recv()
    assert reply["code"] == "message_too_large"
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_frame_far_beyond_the_limit_closes_with_1009(
    gateway_factory, make_config, connect, token
):
    running = await gateway_factory(make_config(limits={"max_message_bytes": 1024}))
    client = await connect(running.ws_url, token())
    await client.ws.send_str("x" * 300_000)
    assert await client.close_code() == CloseCode.MESSAGE_TOO_BIG


async def test_rate_limit_refuses_frames_beyond_the_burst(
    gateway_factory, make_config, connect, token
):
    running = await gateway_factory(make_config(limits={"messages_per_second": 2, "burst": 5}))
    client = await connect(running.ws_url, token())  # authenticate used one token
    for n in range(8):
        await client.send({"type": "ping", "id": n})
    replies = [await client.recv() for _ in range(8)]
    limited = [r for r in replies if r["type"] == "error"]
    assert {r["code"] for r in limited} == {"rate_limited"}
    assert len(limited) >= 3
    assert all("id" not in r for r in limited)  # dropped unread, so no id to echo
    answered = [r["id"] for r in replies if r["type"] == "pong"]
    assert answered == sorted(answered)


async def test_connection_limit_per_user(gateway_factory, make_config, connect, token):
    running = await gateway_factory(make_config(limits={"connections_per_user": 2}))
    await connect(running.ws_url, token())
    await connect(running.ws_url, token())
    third = await connect(running.ws_url)
    reply = await third.request({"type": "authenticate", "token": token()})
    assert reply["code"] == "too_many_connections"
    assert await third.close_code() == CloseCode.TOO_MANY_CONNECTIONS
    other_user = await connect(running.ws_url, token(user="bob"))
    assert (await other_user.request({"type": "ping"}))["type"] == "pong"


async def test_connection_limit_at_upgrade_is_http_429(
    gateway_factory, make_config, connect, token
):
    running = await gateway_factory(make_config(limits={"connections_per_user": 1}))
    await connect(running.ws_url, token())
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
            await session.ws_connect(running.ws_url + "?token=" + token())
    assert raised.value.status == 429


async def test_closing_a_connection_frees_its_place(gateway_factory, make_config, connect, token):
    running = await gateway_factory(make_config(limits={"connections_per_user": 1}))
    first = await connect(running.ws_url, token())
    await first.ws.close()
    for _ in range(250):
        if running.gateway.registry.count("alice") == 0:
            break
        await asyncio.sleep(0.02)
    await connect(running.ws_url, token())


async def test_authentication_timeout_closes_with_4001(gateway_factory, make_config, connect):
    running = await gateway_factory(make_config(limits={"auth_timeout_seconds": 0.3}))
    client = await connect(running.ws_url)
    assert await client.close_code() == CloseCode.AUTH_TIMEOUT


async def test_token_expiry_then_reauthentication_keeps_subscriptions(
    gateway_factory, make_config, connect, token
):
    running = await gateway_factory(make_config(limits={"auth_timeout_seconds": 5}))
    client = await connect(running.ws_url, token(ttl=2))
    await client.request({"type": "subscribe", "channel": "agent:exp"})
    expired = await client.recv(timeout=10)
    assert expired["type"] == "error"
    assert expired["code"] == "token_expired"
    refused = await client.request({"type": "publish", "channel": "agent:exp", "payload": 0})
    assert refused["code"] == "token_expired"
    renewed = await client.request({"type": "authenticate", "token": token(ttl=600)})
    assert renewed["type"] == "authenticated"
    publisher = await connect(running.ws_url, token(user="bob"))
    await publisher.request({"type": "publish", "channel": "agent:exp", "payload": "after"})
    message = await client.recv()
    assert message["payload"] == "after"


async def test_expired_token_not_renewed_closes_with_4001(
    gateway_factory, make_config, connect, token
):
    running = await gateway_factory(make_config(limits={"auth_timeout_seconds": 0.5}))
    client = await connect(running.ws_url, token(ttl=1))
    assert (await client.recv(timeout=10))["code"] == "token_expired"
    assert await client.close_code() == CloseCode.AUTH_TIMEOUT


async def test_reauthentication_as_another_user_is_refused(gateway, connect, token):
    client = await connect(gateway.ws_url, token())
    reply = await client.request({"type": "authenticate", "token": token(user="mallory")})
    assert reply["code"] == "auth_failed"


async def test_msgpack_subprotocol_and_delivery_across_formats(gateway, connect, token):
    packed = await connect(gateway.ws_url, token(), subprotocol=MSGPACK_SUBPROTOCOL)
    assert packed.ws.protocol == MSGPACK_SUBPROTOCOL
    text = await connect(gateway.ws_url, token(user="bob"))
    for client in (packed, text):
        await client.request({"type": "subscribe", "channel": "conversation:c1"})
    ack = await text.request(
        {"type": "publish", "channel": "conversation:c1", "payload": {"tok": "héllo", "n": 1.5}}
    )
    message = await packed.recv()
    assert message["payload"] == {"tok": "héllo", "n": 1.5}
    assert message["seq"] == ack["seq"]
    raw = await packed.ws.receive(0.01) if False else None
    assert raw is None


async def test_history_last_n_and_since(gateway, connect, token):
    client = await connect(gateway.ws_url, token())
    seqs = []
    for n in range(5):
        ack = await client.request({"type": "publish", "channel": "agent:h", "payload": n})
        seqs.append(ack["seq"])
    reader = await connect(gateway.ws_url, token(user="bob"))
    reply = await reader.request({"type": "subscribe", "channel": "agent:h", "last": 3})
    assert reply["seq"] == seqs[-1]
    assert [(await reader.recv())["payload"] for _ in range(3)] == [2, 3, 4]
    second = await connect(gateway.ws_url, token(user="bob"))
    reply = await second.request({"type": "subscribe", "channel": "agent:h", "since": seqs[1]})
    assert reply["recovered"] is True
    assert [(await second.recv())["seq"] for _ in range(3)] == seqs[2:]


async def test_since_older_than_history_reports_not_recovered(
    gateway_factory, make_config, connect, token
):
    config = make_config(namespaces={"agent": {"history_messages": 3}})
    running = await gateway_factory(config)
    client = await connect(running.ws_url, token())
    seqs = [
        (await client.request({"type": "publish", "channel": "agent:old", "payload": n}))["seq"]
        for n in range(6)
    ]
    reply = await client.request({"type": "subscribe", "channel": "agent:old", "since": seqs[0]})
    assert reply["recovered"] is False
    assert [(await client.recv())["payload"] for _ in range(3)] == [3, 4, 5]


async def test_namespace_without_history_delivers_live_with_seq_zero(gateway, connect, token):
    client = await connect(gateway.ws_url, token())
    reply = await client.request({"type": "subscribe", "channel": "metrics:m1"})
    assert reply["seq"] == 0
    ack = await client.request({"type": "publish", "channel": "metrics:m1", "payload": 9})
    assert ack["seq"] == 0
    message = await client.recv()
    assert (message["payload"], message["seq"]) == (9, 0)


async def test_repeated_publish_id_is_acknowledged_as_duplicate_and_stored_once(
    gateway, connect, token
):
    client = await connect(gateway.ws_url, token())
    await client.request({"type": "subscribe", "channel": "agent:d"})
    first = await client.request(
        {"type": "publish", "channel": "agent:d", "payload": 1, "id": "same"}
    )
    await client.recv()  # the message itself
    second = await client.request(
        {"type": "publish", "channel": "agent:d", "payload": 1, "id": "same"}
    )
    assert second["seq"] == first["seq"]
    assert second["duplicate"] is True
    pong = await client.request({"type": "ping"})
    assert pong["type"] == "pong"  # no second message was delivered


async def test_a_publish_id_used_again_on_another_channel_of_the_namespace_is_stored(
    gateway, connect, token
):
    client = await connect(gateway.ws_url, token())
    await client.request({"type": "subscribe", "channel": "agent:one"})
    await client.request({"type": "subscribe", "channel": "agent:two"})
    first = await client.request(
        {"type": "publish", "channel": "agent:one", "payload": 1, "id": "same"}
    )
    on_one = await client.recv()
    other = await client.request(
        {"type": "publish", "channel": "agent:two", "payload": 2, "id": "same"}
    )
    on_two = await client.recv()
    assert (other["type"], other.get("duplicate", False)) == ("published", False)
    assert other["seq"] > first["seq"]
    assert (on_one["channel"], on_one["payload"], on_one["seq"]) == ("agent:one", 1, first["seq"])
    assert (on_two["channel"], on_two["payload"], on_two["seq"]) == ("agent:two", 2, other["seq"])


async def test_foreign_origin_is_refused_and_allowed_origin_accepted(gateway_factory, make_config):
    running = await gateway_factory(make_config(allowed_origins=["https://app.example.com"]))
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
            await session.ws_connect(running.ws_url, headers={"Origin": "https://evil.example"})
        assert raised.value.status == 403
        ws = await session.ws_connect(running.ws_url, headers={"Origin": "https://app.example.com"})
        await ws.close()


async def test_client_that_stops_answering_pings_is_closed(
    gateway_factory, make_config, connect, token
):
    running = await gateway_factory(make_config(limits={"heartbeat_seconds": 0.4}))
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(running.ws_url + "?token=" + token(), autoping=False)
        await asyncio.sleep(0.1)
        assert len(running.gateway.connections) == 1
        for _ in range(100):  # never answering the server's pings
            if not running.gateway.connections:
                break
            await asyncio.sleep(0.05)
        assert not running.gateway.connections
        await ws.close()


async def test_a_client_that_answers_pings_stays_and_its_own_pings_are_answered(
    gateway_factory, make_config, token
):
    running = await gateway_factory(make_config(limits={"heartbeat_seconds": 0.4}))
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(running.ws_url + "?token=" + token(), autoping=False)
        assert (await ws.receive_json())["type"] == "authenticated"
        pings = 0
        while pings < 3:  # three of the server's pings, each answered
            msg = await ws.receive(timeout=10)
            assert msg.type is aiohttp.WSMsgType.PING, msg
            await ws.pong(msg.data)
            pings += 1
        assert len(running.gateway.connections) == 1
        await ws.ping(b"are you there")
        while (msg := await ws.receive(timeout=10)).type is aiohttp.WSMsgType.PING:
            await ws.pong(msg.data)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.PONG, b"are you there")
        await ws.close()


async def test_slow_consumer_is_disconnected_while_others_keep_pace(
    gateway_factory, make_config, connect, token
):
    running = await gateway_factory(
        make_config(
            limits={
                "send_queue_frames": 16,
                "send_queue_bytes": 65536,
                "messages_per_second": 10000,
            }
        )
    )
    async with aiohttp.ClientSession() as session:
        slow = await session.ws_connect(running.ws_url + "?token=" + token(user="slow"))
        assert (await slow.receive_json())["type"] == "authenticated"
        await slow.send_json({"type": "subscribe", "channel": "agent:flood"})
        assert (await slow.receive_json())["type"] == "subscribed"
        fast = await connect(running.ws_url, token(user="fast"))
        await fast.request({"type": "subscribe", "channel": "agent:flood"})
        publisher = await connect(running.ws_url, token(user="pub"))
        # Enough to fill the kernel's socket buffers on loopback and then the send queue.
        blob = "y" * 60_000
        count = 400
        received = 0

        async def read_fast() -> None:
            nonlocal received
            while received < count:
                frame = await fast.recv()
                if frame["type"] == "message":
                    received += 1

        reader = asyncio.create_task(read_fast())
        for n in range(count):
            await publisher.request(
                {"type": "publish", "channel": "agent:flood", "payload": {"n": n, "blob": blob}}
            )
        await asyncio.wait_for(reader, 30)
        assert received == count
        for _ in range(200):
            if len(running.gateway.connections) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(running.gateway.connections) == 2  # the slow one is gone
        code = None
        while code is None:
            msg = await slow.receive(timeout=10)
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                code = slow.close_code or -1
        assert code in (CloseCode.SLOW_CONSUMER, -1, 1006)
        await slow.close()


def _metric(text: str, name: str) -> Any:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_a_fault_inside_the_gateway_closes_one_connection_with_1011_only(
    gateway, connect, token, monkeypatch
):
    async def broken_follow(*args: Any) -> None:
        raise RuntimeError("a bug")

    victim = await connect(gateway.ws_url, token())
    bystander = await connect(gateway.ws_url, token(user="bob"))
    monkeypatch.setattr(gateway.gateway.hub, "follow", broken_follow)
    await victim.send({"type": "subscribe", "channel": "agent:bug"})
    assert await victim.close_code() == CloseCode.INTERNAL_ERROR
    assert (await bystander.request({"type": "ping"}))["type"] == "pong"


async def test_a_frame_just_under_the_default_limit_is_published(gateway, connect, token):
    client = await connect(gateway.ws_url, token())
    payload = "p" * (1024 * 1024 - 200)
    await client.request({"type": "subscribe", "channel": "agent:big"})
    ack = await client.request({"type": "publish", "channel": "agent:big", "payload": payload})
    assert ack["type"] == "published", ack
    assert (await client.recv())["payload"] == payload


async def test_a_message_over_the_nats_max_payload_is_message_too_large(
    gateway_factory, make_config, connect, token
):
    # The gateway allows 16 MiB frames, the NATS server only 8 MiB messages.
    running = await gateway_factory(make_config(limits={"max_message_bytes": 16 * 1024 * 1024}))
    client = await connect(running.ws_url, token())
    reply = await client.request(
        {"type": "publish", "channel": "agent:big", "payload": "p" * (9 * 1024 * 1024)}
    )
    assert reply["code"] == "message_too_large"
    assert "max_payload" in reply["message"]


@pytest.mark.parametrize(
    "origin", ["http://[", "http://127.0.0.1:1", "https://evil.example", "null"]
)
async def test_malformed_or_foreign_origin_is_403(gateway, origin):
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
            await session.ws_connect(gateway.ws_url, headers={"Origin": origin})
    assert raised.value.status == 403


async def test_same_origin_page_may_connect(gateway):
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(
            gateway.ws_url, headers={"Origin": f"http://127.0.0.1:{gateway.port}"}
        )
        await ws.close()


async def test_upgrades_abandoned_by_the_client_do_not_use_up_the_connection_limit(
    gateway_factory, make_config, connect, token
):
    running = await gateway_factory(make_config(limits={"connections_per_user": 2}))
    request = (
        f"GET /ws?token={token()} HTTP/1.1\r\nHost: 127.0.0.1:{running.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    ).encode()
    for _ in range(6):
        _, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(request)
        writer.transport.abort()
    abandoned = running.gateway.metrics.upgrades_abandoned
    for _ in range(200):
        handled = (
            abandoned._value.get()
            + running.gateway.metrics.rejections.labels("too_many_connections")._value.get()
        )
        if handled >= 6 and not running.gateway.connections:
            break
        await asyncio.sleep(0.05)
    assert running.gateway.registry.count("alice") == 0
    await connect(running.ws_url, token())
    await connect(running.ws_url, token())


async def test_resume_after_the_stream_was_recreated_reports_not_recovered(gateway, connect, token):
    import nats as nats_client

    from neurelay.jetstream.streams import desired_stream
    from neurelay.protocol.channels import stream_name

    client = await connect(gateway.ws_url, token())
    seqs = [
        (await client.request({"type": "publish", "channel": "agent:re", "payload": n}))["seq"]
        for n in range(5)
    ]
    config = gateway.gateway.live.config
    prefix = config.nats.subject_prefix
    nc = await nats_client.connect(config.nats.servers[0])
    js = nc.jetstream()
    await js.delete_stream(stream_name(prefix, "agent"))
    await js.add_stream(desired_stream(prefix, "agent", config.namespaces["agent"]))
    await nc.close()
    fresh = await client.request({"type": "publish", "channel": "agent:re", "payload": "new"})
    assert fresh["seq"] < seqs[-1]
    reply = await client.request({"type": "subscribe", "channel": "agent:re", "since": seqs[-1]})
    assert reply["recovered"] is False
    assert (await client.recv())["payload"] == "new"
    # `since` lay beyond the new stream's head: later messages, numbered below it, still come.
    later = await client.request({"type": "publish", "channel": "agent:re", "payload": "later"})
    assert later["seq"] < seqs[-1]
    message = await client.recv()
    assert (message["payload"], message["seq"]) == ("later", later["seq"])


async def test_gateway_started_before_nats_becomes_ready_when_nats_arrives(own_nats, make_config):
    own_nats.stop()
    from aiohttp import web

    from neurelay.gateway.app import create_app
    from neurelay.gateway.runtime import Gateway
    from tests.conftest import RunningGateway

    gateway = Gateway(make_config(nats_url=own_nats.url))
    runner = web.AppRunner(create_app(gateway), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    running = RunningGateway(gateway, runner, runner.addresses[0][1])
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(running.http_url + "/readyz") as response:
                assert response.status == 503
            own_nats.start()
            await gateway.wait_until_connected(30)
            async with http.get(running.http_url + "/readyz") as response:
                assert response.status == 200
    finally:
        await running.stop()
