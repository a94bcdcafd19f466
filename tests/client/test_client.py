"""The Python client: acknowledged publishes, ordered once-only delivery, reconnect and resume."""

from __future__ import annotations

import asyncio

import pytest

from neurelay.client import Client, IdInFlight, Published
from neurelay.errors import ServerError
from neurelay.protocol.codecs import (
    JSON_BATCH_SUBPROTOCOL,
    MSGPACK_BATCH_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
)
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def link(gateway):
    """A cuttable TCP link in front of the gateway."""
    proxy = TcpProxy("127.0.0.1", gateway.port)
    await proxy.start()
    yield proxy
    await proxy.stop()


def _url(proxy: TcpProxy) -> str:
    return f"ws://127.0.0.1:{proxy.port}/ws"


async def test_publish_returns_the_acknowledged_seq_and_subscribers_get_the_message(gateway, token):
    async with Client(gateway.ws_url, token()) as client:
        subscription = await client.subscribe("agent:c1")
        published = await client.publish("agent:c1", {"k": "v"}, id="fixed-id")
        message = await subscription.get(timeout=10)
        assert (message.channel, message.payload, message.seq, message.id) == (
            "agent:c1",
            {"k": "v"},
            published.seq,
            "fixed-id",
        )
        assert client.user == "alice"


async def test_a_publish_with_the_id_of_one_awaiting_its_reply_is_refused_and_the_first_stands(
    gateway, token
):
    async with Client(gateway.ws_url, token(), request_timeout=5) as client:
        subscription = await client.subscribe("agent:same")
        first, second = await asyncio.gather(
            client.publish("agent:same", 1, id="same"),
            client.publish("agent:same", 1, id="same"),
            return_exceptions=True,
        )
        assert isinstance(first, Published)
        assert isinstance(second, IdInFlight)
        again = await client.publish("agent:same", 1, id="same")
        assert (again.seq, again.duplicate) == (first.seq, True)
        message = await subscription.get(timeout=10)
        assert (message.id, message.seq) == ("same", first.seq)


async def test_msgpack_client_talks_to_json_client(gateway, token):
    async with (
        Client(gateway.ws_url, token(), subprotocol=MSGPACK_SUBPROTOCOL) as packed,
        Client(gateway.ws_url, token(user="bob")) as text,
    ):
        subscription = await packed.subscribe("conversation:mp")
        await text.publish("conversation:mp", [1, "two", {"3": None}])
        assert (await subscription.get(timeout=10)).payload == [1, "two", {"3": None}]


async def test_refusals_raise_server_error_with_the_protocol_code(gateway, token):
    async with Client(gateway.ws_url, token()) as client:
        with pytest.raises(ServerError) as raised:
            await client.subscribe("user:bob")
        assert raised.value.code == "forbidden"
        with pytest.raises(ServerError) as raised:
            await client.publish("agent:*", 1)
        assert raised.value.code == "invalid_channel"


async def test_bad_token_fails_connect(gateway):
    client = Client(gateway.ws_url, "garbage")
    with pytest.raises(ServerError) as raised:
        await client.connect()
    assert raised.value.code == "auth_failed"


async def test_after_a_disconnect_the_client_resumes_every_channel_without_gap_or_duplicate(
    gateway, link, token
):
    async with (
        Client(_url(link), token(), backoff_initial=0.05, backoff_max=0.2) as client,
        Client(gateway.ws_url, token(user="svc")) as publisher,
    ):
        agent = await client.subscribe("agent:res")
        convo = await client.subscribe("conversation:res", last=1)
        sent = [await publisher.publish("agent:res", n) for n in range(3)]
        assert [(await agent.get(timeout=10)).seq for _ in range(3)] == [p.seq for p in sent]
        link.cut()
        sent = [await publisher.publish("agent:res", n) for n in range(3, 6)]
        tokens = [await publisher.publish("conversation:res", f"t{n}") for n in range(4)]
        link.restore()
        assert [(await agent.get(timeout=20)).payload for _ in range(3)] == [3, 4, 5]
        assert [(await convo.get(timeout=20)).seq for _ in range(4)] == [t.seq for t in tokens]
        assert client.reconnects == 1
        latest = await publisher.publish("agent:res", 6)
        assert (await agent.get(timeout=10)).seq == latest.seq


@pytest.mark.parametrize("subprotocol", [JSON_BATCH_SUBPROTOCOL, MSGPACK_BATCH_SUBPROTOCOL])
async def test_a_batching_client_gets_history_and_live_messages_once_in_order_across_reconnects(
    gateway, link, token, subprotocol
):
    async with (
        Client(
            _url(link), token(), subprotocol=subprotocol, backoff_initial=0.05, backoff_max=0.2
        ) as client,
        Client(gateway.ws_url, token(user="svc")) as publisher,
    ):
        before = [await publisher.publish("agent:batch", n) for n in range(20)]
        # `subscribed` and the 20 messages of history come in the same frame or few.
        history = await client.subscribe("agent:batch", last=20)
        live = await client.subscribe("conversation:batch")
        assert [(await history.get(timeout=10)).seq for _ in range(20)] == [p.seq for p in before]
        sent = await asyncio.gather(
            *(publisher.publish("conversation:batch", n) for n in range(30))
        )
        got = [await live.get(timeout=10) for _ in range(30)]
        assert [m.seq for m in got] == sorted(p.seq for p in sent)
        assert sorted(m.payload for m in got) == list(range(30))
        link.cut()
        missed = [await publisher.publish("agent:batch", n) for n in range(20, 40)]
        link.restore()
        assert [(await history.get(timeout=20)).seq for _ in range(20)] == [p.seq for p in missed]
        latest = await publisher.publish("conversation:batch", "after")
        assert (await live.get(timeout=10)).seq == latest.seq  # read after the reconnect ended
        assert client.reconnects == 1


async def test_publish_made_while_disconnected_is_sent_after_reconnecting(gateway, link, token):
    async with Client(_url(link), token(), backoff_initial=0.05, backoff_max=0.2) as client:
        subscription = await client.subscribe("agent:later")
        link.cut()
        await asyncio.sleep(0.2)
        pending = asyncio.create_task(client.publish("agent:later", "queued"))
        await asyncio.sleep(0.3)
        assert not pending.done()
        link.restore()
        published = await asyncio.wait_for(pending, 20)
        message = await subscription.get(timeout=20)
        assert (message.payload, message.seq) == ("queued", published.seq)


async def test_token_source_is_asked_again_when_the_token_expires(
    gateway_factory, make_config, token
):
    running = await gateway_factory(make_config(limits={"auth_timeout_seconds": 5}))
    issued = []

    def fresh_token() -> str:
        issued.append(token(ttl=2 if not issued else 600))
        return issued[-1]

    async with (
        Client(running.ws_url, fresh_token) as client,
        Client(running.ws_url, token(user="svc")) as publisher,
    ):
        subscription = await client.subscribe("agent:exp")
        for _ in range(100):
            if len(issued) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(issued) == 2
        await asyncio.sleep(0.2)
        published = await publisher.publish("agent:exp", "still here")
        assert (await subscription.get(timeout=10)).seq == published.seq


async def test_rate_limited_request_raises_instead_of_waiting_for_a_reply(
    gateway_factory, make_config, token
):
    running = await gateway_factory(make_config(limits={"messages_per_second": 1, "burst": 2}))
    async with Client(running.ws_url, token()) as client:
        codes = []
        for n in range(4):
            try:
                await client.publish("agent:rl", n)
            except ServerError as e:
                codes.append(e.code)
        assert codes
        assert set(codes) == {"rate_limited"}
