"""The `+batch` subprotocols over real WebSockets: several messages per frame, none lost,
none twice, in order, and no frame of several messages over `BATCH_FRAME_BYTES`."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from neurelay.protocol.codecs import (
    BATCH_FRAME_BYTES,
    CODECS,
    JSON_BATCH_SUBPROTOCOL,
    MSGPACK_BATCH_SUBPROTOCOL,
)

pytestmark = pytest.mark.timeout(60)
BATCHED = [JSON_BATCH_SUBPROTOCOL, MSGPACK_BATCH_SUBPROTOCOL]


@pytest.fixture
async def gateway(gateway_factory, make_config):
    """A gateway that lets one publisher send a few hundred frames at once."""
    return await gateway_factory(make_config(limits={"messages_per_second": 10_000}))


async def _frames(client: Any, want: int) -> list[list[dict[str, Any]]]:
    """Read WebSocket frames until they hold `want` messages; each frame's decoded objects."""
    frames: list[list[dict[str, Any]]] = []
    got = 0
    while got < want:
        msg = await client.ws.receive(20)
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
        objects = client.codec.decode_batch(msg.data)
        raw = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
        assert len(objects) == 1 or len(raw) <= BATCH_FRAME_BYTES, (len(objects), len(raw))
        frames.append(objects)
        got += sum(1 for o in objects if o["type"] == "message")
    return frames


async def _publish_all(publisher: Any, channel: str, payloads: list[Any]) -> list[int]:
    """Publish without waiting for each acknowledgement; the acknowledged seqs, in order."""
    for n, payload in enumerate(payloads):
        await publisher.send({"type": "publish", "channel": channel, "payload": payload, "id": n})
    acks: dict[int, int] = {}
    while len(acks) < len(payloads):
        frame = await publisher.recv(20)
        if frame["type"] == "published":
            acks[frame["id"]] = frame["seq"]
        else:
            assert frame["type"] == "message", frame
    return [acks[n] for n in range(len(payloads))]


@pytest.mark.parametrize("subprotocol", BATCHED)
async def test_the_subprotocol_is_negotiated_and_history_comes_several_messages_per_frame(
    gateway, connect, token, subprotocol
):
    publisher = await connect(gateway.ws_url, token(user="pub"))
    seqs = await _publish_all(publisher, "agent:hist", list(range(30)))
    client = await connect(gateway.ws_url, token(), subprotocol=subprotocol)
    assert client.ws.protocol == subprotocol
    assert CODECS[subprotocol].batched
    await client.send({"type": "subscribe", "channel": "agent:hist", "last": 30, "id": "s"})
    frames = await _frames(client, 30)
    objects = [o for frame in frames for o in frame]
    assert objects[0]["type"] == "subscribed"
    assert [o["seq"] for o in objects[1:]] == seqs
    assert [o["payload"] for o in objects[1:]] == list(range(30))
    # `subscribed` and the history are queued in one pass: they cannot need a frame each.
    assert len(frames) < len(objects)


@pytest.mark.parametrize("subprotocol", BATCHED)
async def test_frames_of_several_messages_stay_within_the_limit_and_a_larger_one_comes_alone(
    gateway, connect, token, subprotocol
):
    publisher = await connect(gateway.ws_url, token(user="pub"))
    # 90 KiB of history (the namespace keeps 100 messages) and one message over the limit.
    payloads: list[Any] = [{"n": n, "pad": "p" * 1000} for n in range(90)]
    payloads[40] = {"n": 40, "pad": "L" * (BATCH_FRAME_BYTES + 1000)}
    seqs = await _publish_all(publisher, "agent:big", payloads)
    client = await connect(gateway.ws_url, token(), subprotocol=subprotocol)
    await client.send({"type": "subscribe", "channel": "agent:big", "last": 90, "id": "s"})
    frames = await _frames(client, 90)  # checks each frame's size
    messages = [o for frame in frames for o in frame if o["type"] == "message"]
    assert [m["seq"] for m in messages] == seqs
    assert [m["payload"]["n"] for m in messages] == list(range(90))
    assert [len(f) for f in frames if any(o.get("seq") == seqs[40] for o in f)] == [1]
    assert len(frames) < len(messages) / 10


@pytest.mark.parametrize("subprotocol", BATCHED)
async def test_a_reader_that_falls_behind_gets_every_live_message_once_in_order(
    gateway, connect, token, subprotocol
):
    batched = await connect(gateway.ws_url, token(), subprotocol=subprotocol)
    plain = await connect(gateway.ws_url, token(user="bystander"))
    for client in (batched, plain):
        await client.request({"type": "subscribe", "channel": "agent:live"})
    publisher = await connect(gateway.ws_url, token(user="pub"))
    # Several MiB while `batched` reads nothing: its socket buffers fill and the rest queues.
    payloads = [{"n": n, "pad": "q" * 20_000} for n in range(200)]
    seqs = await _publish_all(publisher, "agent:live", payloads)
    for client in (batched, plain):
        frames = await _frames(client, len(payloads))
        messages = [o for frame in frames for o in frame if o["type"] == "message"]
        assert [m["seq"] for m in messages] == seqs
        assert [m["payload"]["n"] for m in messages] == list(range(200))
