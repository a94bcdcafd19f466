"""Fan-out by broadcast over real WebSockets and NATS: subscribers up to date share one set of
wire bytes per pass, the others get messages one by one, and either way every message arrives
once, in order, in every codec; a subscriber moves between the two without loss or duplicate;
join/leave notices take the same path. Plus the wire bytes themselves, without I/O."""

from __future__ import annotations

import asyncio
import secrets
import struct
from collections import defaultdict
from typing import Any

import nats
import pytest

from neurelay.gateway.broadcasting import Broadcast
from neurelay.gateway.outbox import Outbox, websocket_frame
from neurelay.protocol.codecs import (
    BATCH_FRAME_BYTES,
    CODECS,
    JSON_BATCH_SUBPROTOCOL,
    JSON_SUBPROTOCOL,
    MSGPACK_BATCH_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
)

pytestmark = pytest.mark.timeout(90)
SUBPROTOCOLS = [
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    JSON_BATCH_SUBPROTOCOL,
    MSGPACK_BATCH_SUBPROTOCOL,
]
NAMESPACES = {
    "agent": {"history_messages": 2000},
    "conversation": {"history_messages": 100, "presence": True, "join_leave": True},
}
LIMITS = {
    "messages_per_second": 100_000,
    "send_queue_frames": 100_000,
    "send_queue_bytes": 256 * 1024 * 1024,
    "replay_bytes": 64 * 1024 * 1024,
}


@pytest.fixture
async def running(gateway_factory, make_config):
    return await gateway_factory(make_config(limits=LIMITS, namespaces=NAMESPACES))


@pytest.fixture
def paths(monkeypatch) -> dict[int, list[bool]]:
    """Per outbox (by id), the way each pass went: shared bytes (True) or one by one (False)."""
    taken: dict[int, list[bool]] = defaultdict(list)
    idle_transport, send_each = Outbox.idle_transport, Broadcast._send_each

    def recording_shared(outbox: Outbox) -> Any:
        transport = idle_transport(outbox)
        if transport is not None:  # the shared bytes are written to it
            taken[id(outbox)].append(True)
        return transport

    def recording_each(broadcast: Broadcast, follower: Any, queue_frames: int) -> int:
        taken[id(follower.outbox)].append(False)
        return send_each(broadcast, follower, queue_frames)

    monkeypatch.setattr(Outbox, "idle_transport", recording_shared)
    monkeypatch.setattr(Broadcast, "_send_each", recording_each)
    return taken


def _outbox_of(running: Any, user: str) -> int:
    [connection] = [c for c in running.gateway.connections if c.admitted_user == user]
    return id(connection.outbox)


async def _publish_all(
    publisher: Any, channel: str, payloads: list[Any], window: int | None = None
) -> list[int]:
    """Publish without waiting for each acknowledgement (or, with `window`, for those of the
    window before); the acknowledged seqs, in order."""
    ids = [secrets.token_hex(8) for _ in payloads]  # never one of an earlier call's: no dedup
    acks: dict[str, int] = {}
    step = window or len(payloads)
    for start in range(0, len(payloads), step):
        sent = list(zip(ids, payloads, strict=True))[start : start + step]
        for message_id, payload in sent:
            await publisher.send(
                {"type": "publish", "channel": channel, "payload": payload, "id": message_id}
            )
        while len(acks) < start + len(sent):
            frame = await publisher.recv(30)
            if frame["type"] == "published":
                assert not frame.get("duplicate"), frame
                acks[frame["id"]] = frame["seq"]
    return [acks[message_id] for message_id in ids]


async def _messages(client: Any, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < count:
        frame = await client.recv(30)
        if frame["type"] == "message":
            got.append(frame)
    return got


async def _no_more_messages(client: Any) -> None:
    """Nothing but what a ping's answer overtakes: no duplicate after the last message."""
    reply = await client.request({"type": "ping"})
    assert reply["type"] == "pong"
    assert [f for f in client.unread if f["type"] == "message"] == []


async def test_subscribers_in_every_state_get_every_message_once_in_order_while_publishing(
    running, connect, token, paths
):
    channel = "agent:mix"
    live = []
    for n in range(12):
        client = await connect(
            running.ws_url, token(user=f"live{n}"), subprotocol=SUBPROTOCOLS[n % 4]
        )
        await client.request({"type": "subscribe", "channel": channel})
        live.append(client)
    slow = await connect(running.ws_url, token(user="slow"), subprotocol=MSGPACK_BATCH_SUBPROTOCOL)
    await slow.request({"type": "subscribe", "channel": channel})
    publisher = await connect(running.ws_url, token(user="pub"))
    # First a few that everyone reads at once, while up to date.
    warm = await _publish_all(publisher, channel, ["warm"] * 3)
    for client in [*live, slow]:
        assert [m["seq"] for m in await _messages(client, 3)] == warm
    # Then 6 MB in all: more than the socket buffers of `slow`, which reads nothing meanwhile.
    payloads = [{"n": n, "pad": "m" * (30_000 if n % 3 == 0 else 10)} for n in range(600)]

    async def read(client: Any) -> list[dict[str, Any]]:
        return await _messages(client, len(payloads))

    readers = [asyncio.create_task(read(client)) for client in live]
    # One at a time: the gateway pipelines a client's publishes, and all at once they could
    # be stored before the first resumer arrives.
    sending = asyncio.create_task(_publish_all(publisher, channel, payloads, window=1))
    # Subscribers arriving while messages flow: from the start of the history, from a seq
    # in the middle, and plain (only what comes after their `subscribed`).
    resumers: list[tuple[Any, int | None, int]] = []
    for n in range(8):
        await asyncio.sleep(0.02)
        client = await connect(
            running.ws_url, token(user=f"resumer{n}"), subprotocol=SUBPROTOCOLS[n % 4]
        )
        frame: dict[str, Any] = {"type": "subscribe", "channel": channel}
        if n % 3 == 0:
            frame["since"] = 0
        elif n % 3 == 1:
            frame["since"] = 5 * n
        reply = await client.request(frame)
        assert reply["type"] == "subscribed", reply
        resumers.append((client, frame.get("since"), reply["seq"]))
    seqs = await sending

    for reader in readers:
        got = await reader
        assert [m["seq"] for m in got] == seqs
        assert [m["payload"]["n"] for m in got] == list(range(len(payloads)))
    slow_outbox = _outbox_of(running, "slow")
    slow_got = await _messages(slow, len(payloads))
    assert [m["seq"] for m in slow_got] == seqs
    for client, since, head in resumers:
        first = since if since is not None else head
        want = [s for s in warm + seqs if s > first]
        got = await _messages(client, len(want))
        assert [m["seq"] for m in got] == want
    for client in [*live, slow, *(r[0] for r in resumers)]:
        await _no_more_messages(client)
    assert True in paths[slow_outbox]  # both ways were taken
    assert False in paths[slow_outbox]


@pytest.mark.parametrize("subprotocol", [JSON_SUBPROTOCOL, MSGPACK_BATCH_SUBPROTOCOL])
async def test_a_subscriber_that_falls_behind_and_catches_up_loses_nothing_and_gets_nothing_twice(
    running, connect, token, paths, subprotocol
):
    channel = "agent:lag"
    lagging = await connect(running.ws_url, token(user="lagging"), subprotocol=subprotocol)
    await lagging.request({"type": "subscribe", "channel": channel})
    publisher = await connect(running.ws_url, token(user="pub"))
    outbox = _outbox_of(running, "lagging")

    before = await _publish_all(publisher, channel, [{"n": n} for n in range(20)])
    first = await _messages(lagging, 20)
    shared_before = len(paths[outbox])
    # Several MiB while it reads nothing: its socket buffers fill, then its queue.
    # One at a time, so they come over many event-loop passes (all at once, the gateway's
    # pipeline may take them in a few: the check for an idle subscriber runs once a pass).
    during = await _publish_all(
        publisher, channel, [{"n": n, "pad": "z" * 30_000} for n in range(200)], window=1
    )
    second = await _messages(lagging, 200)
    after = await _publish_all(publisher, channel, [{"n": n} for n in range(20)])
    third = await _messages(lagging, 20)
    await _no_more_messages(lagging)

    assert [m["seq"] for m in first + second + third] == before + during + after
    taken = paths[outbox]
    assert shared_before > 0
    assert all(taken[:shared_before])  # up to date: shared bytes
    assert False in taken[shared_before:]  # fell behind: one by one through its queue
    assert taken[-1]  # caught up: shared again


async def test_join_and_leave_reach_every_member_once_and_in_order_while_messages_flow(
    running, connect, token
):
    channel = "conversation:storm"
    watchers = []
    for n in range(4):
        client = await connect(
            running.ws_url, token(user=f"watcher{n}"), subprotocol=SUBPROTOCOLS[n]
        )
        await client.request({"type": "subscribe", "channel": channel})
        watchers.append(client)
    publisher = await connect(running.ws_url, token(user="pub"))
    sending = asyncio.create_task(_publish_all(publisher, channel, [{"n": n} for n in range(100)]))
    joiners = []
    for n in range(10):
        client = await connect(
            running.ws_url, token(user=f"joiner{n}"), subprotocol=SUBPROTOCOLS[n % 4]
        )
        await client.request({"type": "subscribe", "channel": channel})
        joiners.append(client)
    for client in joiners:
        await client.request({"type": "unsubscribe", "channel": channel})
    seqs = await sending
    users = [f"joiner{n}" for n in range(10)]

    for n, watcher in enumerate(watchers):
        frames: list[dict[str, Any]] = []
        while len([f for f in frames if f["type"] == "leave"]) < len(users):
            frames.append(await watcher.recv(30))
        while len([f for f in frames if f["type"] == "message"]) < len(seqs):
            frames.append(await watcher.recv(30))
        joins = [f["user"] for f in frames if f["type"] == "join"]
        # The watchers after it, then the joiners, each once, never itself (one just before
        # it may be heard too, its notice still on its way when this one subscribed).
        earlier = {f"watcher{before}" for before in range(n + 1)}
        assert [u for u in joins if u not in earlier] == [
            f"watcher{later}" for later in range(n + 1, 4)
        ] + users
        assert f"watcher{n}" not in joins
        assert len(set(joins)) == len(joins)
        assert [f["user"] for f in frames if f["type"] == "leave"] == users
        assert [f["seq"] for f in frames if f["type"] == "message"] == seqs
        await watcher.request({"type": "ping"})
        assert [f for f in watcher.unread if f["type"] in ("join", "leave", "message")] == []
    for n, client in enumerate(joiners):
        await client.request({"type": "ping"})
        heard = [f["user"] for f in client.unread if f["type"] in ("join", "leave")]
        assert f"joiner{n}" not in heard  # never its own


def _frames_of(wire: bytes) -> list[tuple[int, bytes]]:
    """The (opcode, payload) of each unmasked, final WebSocket frame in `wire`."""
    found = []
    while wire:
        first, size = wire[0], wire[1]
        assert first & 0x80  # final
        assert not wire[1] & 0x80  # unmasked
        start = 2
        if size == 126:
            (size,) = struct.unpack("!H", wire[2:4])
            start = 4
        elif size == 127:
            (size,) = struct.unpack("!Q", wire[2:10])
            start = 10
        found.append((first & 0x0F, wire[start : start + size]))
        wire = wire[start + size :]
    return found


@pytest.mark.parametrize("subprotocol", SUBPROTOCOLS)
def test_a_pass_on_the_wire_is_what_each_frame_would_be_alone(subprotocol):
    codec = CODECS[subprotocol]
    broadcast = Broadcast()
    frames = []
    for n in range(40):
        frame = {"type": "message", "channel": "agent:w", "seq": n + 1, "payload": "w" * 3000}
        broadcast.add_message(n + 1, frame)
        frames.append(frame)
    join = {"type": "join", "channel": "agent:w", "user": "u", "connection": "c"}
    broadcast.add_notice(join, "c")
    frames.append(join)

    on_wire = _frames_of(broadcast.wire(codec))

    opcode = 2 if codec.binary else 1
    assert {op for op, _ in on_wire} == {opcode}
    decoded = [o for _, payload in on_wire for o in codec.decode_batch(payload)]
    assert decoded == frames
    if codec.batched:
        assert 1 < len(on_wire) < len(frames)
        assert all(len(payload) <= BATCH_FRAME_BYTES for _, payload in on_wire)
    else:
        assert broadcast.wire(codec) == b"".join(
            websocket_frame(codec.encode(f), codec.binary) for f in frames
        )


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


def test_an_entry_no_encoder_can_write_is_dropped_and_the_rest_of_the_pass_kept() -> None:
    broadcast = Broadcast()
    broadcast.add_message(1, {"type": "message", "payload": "a", "seq": 1})
    broadcast.add_message(2, {"type": "message", "payload": _nested(300), "seq": 2})
    broadcast.add_message(3, {"type": "message", "payload": "c", "seq": 3})
    assert broadcast.drop_unencodable() == [2]
    assert [seq for seq, _, _ in broadcast.entries] == [1, 3]
    assert (broadcast.messages, broadcast.first_seq, broadcast.last_seq) == (2, 1, 3)
    for codec in CODECS.values():
        assert len(broadcast.encoded(codec)) == 2


async def test_an_envelope_written_past_the_encoders_limits_costs_only_itself(
    running, connect, token, shared_nats, prefix
):
    """Others may write envelopes straight into a stream: one nested deeper than orjson
    writes must not hold back its pass, nor any other channel's."""
    poisoned, other = "agent:poisoned", "agent:other"
    clients = {}
    for n, subprotocol in enumerate(SUBPROTOCOLS):
        client = await connect(running.ws_url, token(user=f"s{n}"), subprotocol=subprotocol)
        await client.request({"type": "subscribe", "channel": poisoned})
        await client.request({"type": "subscribe", "channel": other})
        clients[subprotocol] = client
    nc = await nats.connect(shared_nats.url)
    try:
        # Written without waiting for acks, so that they share the gateway's passes.
        bad = b'{"p": ' + b"[" * 300 + b"0" + b"]" * 300 + b"}"
        for n in range(30):
            if n % 10 == 0:
                await nc.publish(f"{prefix}.s.agent.poisoned", bad)
            await nc.publish(f"{prefix}.s.agent.poisoned", b'{"p": %d}' % n)
            await nc.publish(f"{prefix}.s.agent.other", b'{"p": %d}' % n)
        await nc.flush()
    finally:
        await nc.close()
    for client in clients.values():
        got = await _messages(client, 60)
        for channel in (poisoned, other):
            assert [m["payload"] for m in got if m["channel"] == channel] == list(range(30))
        await _no_more_messages(client)
