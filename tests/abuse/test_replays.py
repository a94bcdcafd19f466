"""History amplification and replays cut short: `last`, `since` and big concurrent replays.

A channel holding many messages (or big ones) must not let `last: 1` read the
whole history, and a replay interrupted by a NATS reconnect must answer
`unavailable` or `recovered: false`, never `recovered: true` with a gap. A
bystander on another channel of the same gateway loses nothing meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import nats
import pytest

from neurelay.protocol.channels import parse_channel, stored_subject
from tests.abuse.bystander import Bystander, scaled
from tests.support.tcpproxy import TcpProxy


def _read_count(running: Any) -> float:
    value = running.gateway.metrics.registry.get_sample_value(
        "neurelay_history_messages_read_total"
    )
    return float(value or 0.0)


async def _fill(nats_url: str, prefix: str, channel_id: str, count: int, size: int) -> list[int]:
    """Store `count` messages of about `size` bytes on conversation:<channel_id>, as a backend."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream(timeout=30.0)
        body = base64.b64encode(os.urandom(size * 3 // 4)).decode()
        seqs = []
        for n in range(count):
            ack = await js.publish(
                stored_subject(prefix, parse_channel(f"conversation:{channel_id}")),
                b'{"p":{"n":%d,"b":"%s"},"i":null,"t":0,"u":"backend"}' % (n, body.encode()),
            )
            seqs.append(ack.seq)
        return seqs
    finally:
        await nc.close()


async def test_last_n_reads_n_messages_however_long_the_history(
    make_config: Any, gateway_factory: Any, connect: Any, token: Any, shared_nats: Any, prefix: str
) -> None:
    running = await gateway_factory(make_config())
    stored = await _fill(shared_nats.url, prefix, "long", scaled(400, 1000), 200)
    bystander = await Bystander(connect, running.ws_url, token(user="bystander")).start()
    attacker = await connect(running.ws_url, token(user="mallory"))

    for last in (1, 5):
        before = _read_count(running)
        reply = await attacker.request(
            {"type": "subscribe", "channel": "conversation:long", "last": last}
        )
        assert reply["type"] == "subscribed", reply
        assert reply["recovered"] is True
        got = [(await attacker.recv())["seq"] for _ in range(last)]
        assert got == stored[-last:]
        assert _read_count(running) - before == last
        await attacker.request({"type": "unsubscribe", "channel": "conversation:long"})

    await bystander.finish()


async def test_a_replay_delivers_at_most_replay_bytes_and_then_says_not_recovered(
    make_config: Any, gateway_factory: Any, connect: Any, token: Any, shared_nats: Any, prefix: str
) -> None:
    running = await gateway_factory(make_config(limits={"replay_bytes": 64 * 1024}))
    stored = await _fill(shared_nats.url, prefix, "big", 20, 16 * 1024)
    client = await connect(running.ws_url, token())

    for request in ({"since": 0}, {"last": 20}):
        reply = await client.request(
            {"type": "subscribe", "channel": "conversation:big", **request}
        )
        assert reply["type"] == "subscribed", reply
        assert reply["recovered"] is False
        got = [(await client.recv())["seq"] for _ in range(3)]
        assert got == stored[-3:], "the newest messages that fit come, oldest first"
        with pytest.raises(asyncio.TimeoutError):
            await client.ws.receive(0.3)
        await client.request({"type": "unsubscribe", "channel": "conversation:big"})


async def test_replays_cut_by_a_nats_reconnect_never_claim_recovery_with_a_gap(
    proxy: TcpProxy,
    make_config: Any,
    gateway_factory: Any,
    connect: Any,
    token: Any,
    shared_nats: Any,
    prefix: str,
) -> None:
    count, size = 100, scaled(64 * 1024, 1_000_000)
    config = make_config(
        nats_url=proxy.url,
        limits={
            "replay_bytes": 256 * 1024 * 1024,
            "send_queue_bytes": 256 * 1024 * 1024,
            "max_message_bytes": 2 * 1024 * 1024,
        },
        nats={"replay_batch_bytes": 2 * size},
    )
    running = await gateway_factory(config)
    stored = await _fill(shared_nats.url, prefix, "huge", count, size)
    bystander = await Bystander(connect, running.ws_url, token(user="bystander")).start()
    readers = [await connect(running.ws_url, token(user=f"reader{n}")) for n in range(3)]
    outcomes: list[str] = []
    for round_ in range(scaled(2, 5)):
        # Cut the gateway's NATS link once about a third of the three replays has come back.
        proxy.cut_after(count * size)
        replies = await asyncio.gather(
            *(
                r.request({"type": "subscribe", "channel": "conversation:huge", "since": 0})
                for r in readers
            )
        )
        for reader, reply in zip(readers, replies, strict=True):
            if reply["type"] == "error":
                assert reply["code"] == "unavailable", reply
                outcomes.append("unavailable")
                continue
            assert reply["type"] == "subscribed", reply
            if not reply["recovered"]:
                outcomes.append("not recovered")
            else:
                got = [(await reader.recv(timeout=60.0))["seq"] for _ in range(count)]
                assert got == stored, f"round {round_}: recovered: true with a gap"
                outcomes.append("complete")
            await reader.request({"type": "unsubscribe", "channel": "conversation:huge"})
        await running.gateway.wait_until_connected(30.0)
    assert "unavailable" in outcomes, f"no replay was cut: {outcomes}"
    await bystander.finish()


async def test_concurrent_big_replays_complete_without_resetting_the_nats_connection(
    make_config: Any, gateway_factory: Any, connect: Any, token: Any, shared_nats: Any, prefix: str
) -> None:
    count, size = 100, scaled(64 * 1024, 1_000_000)
    config = make_config(
        limits={
            "replay_bytes": 256 * 1024 * 1024,
            "send_queue_bytes": 256 * 1024 * 1024,
            "max_message_bytes": 2 * 1024 * 1024,
        }
    )
    running = await gateway_factory(config)
    stored = await _fill(shared_nats.url, prefix, "wide", count, size)
    bystander = await Bystander(connect, running.ws_url, token(user="bystander")).start()
    readers = [await connect(running.ws_url, token(user=f"reader{n}")) for n in range(4)]
    requests = [{"since": 0}, {"since": 0}, {"since": 0}, {"last": 1}]

    replies = await asyncio.gather(
        *(
            r.request({"type": "subscribe", "channel": "conversation:wide", **request})
            for r, request in zip(readers, requests, strict=True)
        )
    )

    for reader, request, reply in zip(readers, requests, replies, strict=True):
        assert reply["type"] == "subscribed", reply
        assert reply["recovered"] is True
        want = stored[-request["last"] :] if "last" in request else stored
        assert [(await reader.recv(timeout=60.0))["seq"] for _ in want] == want
    reconnects = running.gateway.metrics.registry.get_sample_value("neurelay_nats_reconnects_total")
    assert not reconnects
    await bystander.finish()
