"""A stream's leader killed in a real three-node cluster: publishes are refused as retryable.

While JetStream elects a new leader, a publish gets "no response from
stream" or a timeout; protocol.md promises that only `unavailable` means
"retry", so every refusal in that window must be `BusUnavailable`, and
publishing with the same message id resumes without duplicates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from neurelay.config import NamespaceSettings, NatsSettings
from neurelay.embedded import ClusterMembership, EmbeddedNats, free_port
from neurelay.errors import BusError, BusUnavailable
from neurelay.gateway.bus import Bus
from neurelay.jetstream.streams import desired_stream
from neurelay.jetstream.syncing import sync_stream
from neurelay.protocol.channels import Channel, parse_channel

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
NODES = 3


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list[EmbeddedNats]]:
    routes = [free_port() for _ in range(NODES)]
    nodes = [
        EmbeddedNats(
            store_dir=tmp_path / f"n{n}",
            cluster=ClusterMembership(
                name="election",
                server_name=f"n{n}",
                port=routes[n],
                routes=tuple(p for i, p in enumerate(routes) if i != n),
            ),
        )
        for n in range(NODES)
    ]
    for node in nodes:
        node.store_dir.mkdir()
        node.start()
    try:
        yield nodes
    finally:
        for node in nodes:
            node.stop()


async def _until_created(url: list[str], prefix: str) -> str:
    """Create the three-replica stream once the cluster has formed; returns its leader's name."""
    config = desired_stream(prefix, "agent", NamespaceSettings(history_messages=100, replicas=3))
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=5)
        for _ in range(120):
            try:
                info = (await sync_stream(js, config)).info
                if info.cluster is not None and info.cluster.leader:
                    return str(info.cluster.leader)
            except BusUnavailable:
                pass
            await asyncio.sleep(0.25)
    finally:
        await nc.close()
    raise AssertionError("the stream did not get a leader")


class _Futures:
    """Tells the future given as each publish's key its outcome."""

    def settle(
        self, key: asyncio.Future[tuple[int, bool]], outcome: tuple[int, bool] | BusError
    ) -> None:
        if isinstance(outcome, BusError):
            key.set_exception(outcome)
        else:
            key.set_result(outcome)


async def _publish(bus: Bus, channel: Channel, message_key: str) -> tuple[int, bool]:
    """(seq, duplicate) once JetStream answers; its BusError raised instead."""
    ack: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()
    await bus.publish(channel, b"{}", message_key, True, _Futures(), ack)
    return await ack


async def test_publishes_while_the_stream_elects_a_leader_are_only_ever_unavailable(
    nats_cluster: list[EmbeddedNats],
) -> None:
    urls = [node.url for node in nats_cluster]
    leader = await _until_created(urls, "el")
    bus = Bus(
        NatsSettings(servers=urls, subject_prefix="el", request_timeout_seconds=1.0),
        logging.getLogger("test.election"),
    )
    await bus.connect()
    channel = parse_channel("agent:a")
    try:
        first, _ = await _publish(bus, channel, "before")
        next(
            node for node in nats_cluster if node.cluster and node.cluster.server_name == leader
        ).kill()

        refusals: list[BusError] = []
        stored: list[int] = []
        for n in range(40):
            while True:
                try:
                    seq, duplicate = await _publish(bus, channel, f"m{n}")
                except BusError as e:
                    refusals.append(e)
                    await asyncio.sleep(0.1)
                    continue
                assert not duplicate
                stored.append(seq)
                break
        assert [type(e) for e in refusals if not isinstance(e, BusUnavailable)] == []
        assert stored == list(range(first + 1, first + 41))  # nothing lost, nothing twice
    finally:
        await bus.close()
