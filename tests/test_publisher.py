"""neurelay.publisher: straight into JetStream, read by gateway subscribers as if published there.

No loss, no duplicate, order kept: subscribers on a real gateway receive
exactly the published messages in order, including across a cut NATS link
(acks lost, messages republished with their ids) and a publish retried by
the caller.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import nats
import pytest

from neurelay.errors import BusError, BusUnavailable, PayloadTooLarge, ProtocolError
from neurelay.protocol.channels import Channel, stored_subject
from neurelay.publisher import Publisher, PublisherSettings
from tests.conftest import SMALL_MAX_PAYLOAD
from tests.gateway.test_nats_max_payload import payload_of_nats_size, until
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.timeout(90)


def settings(url: str, prefix: str, **overrides: object) -> PublisherSettings:
    return PublisherSettings(servers=[url], user="svc:runner", subject_prefix=prefix, **overrides)


async def stored(url: str, prefix: str, channel: Channel) -> list[tuple[int, bytes]]:
    """Every message the channel's stream holds, as (seq, body)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(stored_subject(prefix, channel), ordered_consumer=True)
        found = []
        info = await js.stream_info(f"{prefix}_{channel.namespace}")
        while len(found) < info.state.messages:
            msg = await sub.next_msg(timeout=5)
            found.append((msg.metadata.sequence.stream, msg.data))
        await sub.unsubscribe()
        return found
    finally:
        await nc.close()


async def test_subscribers_get_a_batch_in_order_once_as_gateway_messages(
    gateway, shared_nats, prefix, connect, token
):
    subscriber = await connect(gateway.ws_url, token())
    await subscriber.request({"type": "subscribe", "channel": "agent:tok"})
    async with Publisher(settings(shared_nats.url, prefix, max_in_flight=64)) as publisher:
        published = await publisher.publish_batch(
            [("agent:tok", {"token": n}, f"t{n}") for n in range(300)]
        )
    received = [await subscriber.recv() for _ in range(300)]
    assert [m["payload"] for m in received] == [{"token": n} for n in range(300)]
    assert [m["id"] for m in received] == [f"t{n}" for n in range(300)]
    assert [m["seq"] for m in received] == [p.seq for p in published]
    assert [p.seq for p in published] == sorted({p.seq for p in published})
    assert not any(p.duplicate for p in published)


async def test_publishing_an_id_again_is_not_stored_twice(
    gateway, shared_nats, prefix, connect, token
):
    subscriber = await connect(gateway.ws_url, token())
    await subscriber.request({"type": "subscribe", "channel": "agent:again"})
    async with Publisher(settings(shared_nats.url, prefix)) as publisher:
        first = await publisher.publish("agent:again", "x", id="only-once")
        again = await publisher.publish("agent:again", "x", id="only-once")
        after = await publisher.publish("agent:again", "y")
    assert (again.seq, again.duplicate) == (first.seq, True)
    received = [await subscriber.recv() for _ in range(2)]
    assert [(m["seq"], m["payload"]) for m in received] == [(first.seq, "x"), (after.seq, "y")]


async def test_a_publisher_id_dedupes_against_the_same_user_publishing_through_a_gateway(
    gateway, shared_nats, prefix, connect, token
):
    client = await connect(gateway.ws_url, token(user="svc:runner"))
    through_gateway = await client.request(
        {"type": "publish", "channel": "agent:both", "payload": 1, "id": "m-1"}
    )
    async with Publisher(settings(shared_nats.url, prefix)) as publisher:
        direct = await publisher.publish("agent:both", 1, id="m-1")
    assert (direct.seq, direct.duplicate) == (through_gateway["seq"], True)


async def test_made_up_ids_are_unique_and_carried_to_subscribers(
    gateway, shared_nats, prefix, connect, token
):
    subscriber = await connect(gateway.ws_url, token())
    await subscriber.request({"type": "subscribe", "channel": "agent:ids"})
    async with Publisher(settings(shared_nats.url, prefix)) as publisher:
        published = await asyncio.gather(*(publisher.publish("agent:ids", n) for n in range(50)))
    received = [await subscriber.recv() for _ in range(50)]
    assert len({m["id"] for m in received}) == 50
    assert [m["id"] for m in received] == [p.id for p in published]


async def test_a_cut_link_loses_and_duplicates_nothing_and_keeps_order(
    gateway, shared_nats, prefix
):
    proxy = TcpProxy("127.0.0.1", shared_nats.port)
    await proxy.start()
    try:
        async with Publisher(
            settings(proxy.url, prefix, ack_timeout_seconds=1.0, max_in_flight=60)
        ) as publisher:
            # Drop the link part-way through the acks of the first window: some messages
            # are stored with their ack lost, others never reach NATS. (100 messages: the
            # channel's history keeps 100, and all of them are checked; 20 kB each, so
            # their acks come back over a while rather than in one read.)
            proxy.cut_after(1000)
            published = await publisher.publish_batch(
                [("agent:cut", [n, "x" * 20_000], f"c{n}") for n in range(100)]
            )
    finally:
        await proxy.stop()
    assert [p.id for p in published] == [f"c{n}" for n in range(100)]
    held = await stored(shared_nats.url, prefix, Channel("agent", "cut"))
    bodies = [body for _, body in held]
    assert len(bodies) == 100
    assert [b'"i":"c%d"' % n in body for n, body in enumerate(bodies)] == [True] * 100
    assert sorted(p.seq for p in published) == [seq for seq, _ in held]


async def test_acks_that_come_too_late_are_retried_and_stored_once_in_order(
    own_nats, make_config, gateway_factory, caplog
):
    caplog.set_level(logging.INFO, logger="neurelay.publisher")
    config = make_config(nats_url=own_nats.url)
    await gateway_factory(config)
    prefix = config.nats.subject_prefix
    pid = own_nats.pid
    assert pid is not None
    async with Publisher(
        settings(own_nats.url, prefix, ack_timeout_seconds=0.5, max_in_flight=30)
    ) as publisher:
        # NATS frozen: the batch is written, no ack comes in time, every message is
        # retried; once NATS runs again it stores the first copies and drops the retries.
        os.kill(pid, signal.SIGSTOP)
        resume = asyncio.get_running_loop().call_later(1.5, os.kill, pid, signal.SIGCONT)
        try:
            published = await publisher.publish_batch(
                [("agent:late", n, f"l{n}") for n in range(100)]
            )
        finally:
            resume.cancel()
            os.kill(pid, signal.SIGCONT)
    assert "retrying" in caplog.text
    held = await stored(own_nats.url, prefix, Channel("agent", "late"))
    assert [body.count(b'"i":"l%d"' % n) for n, (_, body) in enumerate(held)] == [1] * 100
    assert [p.seq for p in published] == [seq for seq, _ in held]


async def test_an_unknown_namespace_fails_after_retrying_for_the_bound(
    gateway, shared_nats, prefix
):
    async with Publisher(settings(shared_nats.url, prefix, retry_seconds=0.5)) as publisher:
        with pytest.raises(BusUnavailable, match="not stored"):
            await publisher.publish("nostream:x", 1)


async def test_an_invalid_channel_is_refused_before_anything_is_sent(gateway, shared_nats, prefix):
    async with Publisher(settings(shared_nats.url, prefix)) as publisher:
        with pytest.raises(ProtocolError):
            await publisher.publish_batch([("agent:ok", 1), ("agent:bad.name", 2)])
    assert await stored(shared_nats.url, prefix, Channel("agent", "ok")) == []


async def test_a_message_over_max_payload_is_refused(gateway, shared_nats, prefix):
    async with Publisher(settings(shared_nats.url, prefix)) as publisher:
        with pytest.raises(BusError, match="max_payload"):
            await publisher.publish("agent:big", "x" * (9 * 2**20))


async def test_a_message_over_max_payload_only_with_its_header_is_refused_not_retried(
    small_nats, make_config, gateway_factory, prefix
):
    await gateway_factory(make_config(nats_url=small_nats.url))  # creates the streams
    async with Publisher(settings(small_nats.url, prefix)) as publisher:
        fits = payload_of_nats_size(SMALL_MAX_PAYLOAD, "fits", "svc:runner")
        over = payload_of_nats_size(SMALL_MAX_PAYLOAD + 1, "over", "svc:runner")
        with pytest.raises(PayloadTooLarge):
            await publisher.publish("agent:big", over, id="over")
        stored_fit = await publisher.publish("agent:big", fits, id="fits")
    assert [seq for seq, _ in await stored(small_nats.url, prefix, Channel("agent", "big"))] == [
        stored_fit.seq
    ]


async def test_callers_finding_the_link_lost_share_one_new_connection(gateway, shared_nats, prefix):
    proxy = TcpProxy("127.0.0.1", shared_nats.port)
    await proxy.start()
    try:
        async with Publisher(settings(proxy.url, prefix)) as publisher:
            first = await publisher.publish("agent:shared", "first", id="first")
            lost = publisher._nc
            proxy.cut()
            proxy.restore()
            await until(lambda: lost.is_closed)
            published = await asyncio.gather(
                *(publisher.publish("agent:shared", n, id=f"n{n}") for n in range(20))
            )
    finally:
        await proxy.stop()
    assert proxy.links_made == 2
    held = await stored(shared_nats.url, prefix, Channel("agent", "shared"))
    assert [seq for seq, _ in held] == sorted([first.seq, *(p.seq for p in published)])
    assert not any(p.duplicate for p in published)


async def test_an_id_used_again_on_another_channel_of_the_namespace_is_stored(
    gateway, shared_nats, prefix
):
    async with Publisher(settings(shared_nats.url, prefix)) as publisher:
        one = await publisher.publish("agent:one", "a", id="same")
        two = await publisher.publish("agent:two", "b", id="same")
    # A duplicate would be answered with the first message's sequence.
    assert (two.channel, two.duplicate, one.seq < two.seq) == ("agent:two", False, True)
