"""The per-user connection limit across replicas: PID-1 replicas, dead replicas, idle cost.

Replicas run as real `neurelay gateway` processes, each in its own PID
namespace (`unshare --pid --fork`), so each is PID 1 as in a container image.
The idle cost is read from the counters of the key-value bucket's stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import orjson
import pytest

from neurelay.gateway.admission import user_key
from neurelay.gateway.bus import admission_bucket
from tests.support.processes import GatewayProcess

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def _pid_namespace_wrapper() -> list[str]:
    """`unshare` as root, or inside a new user namespace where that is allowed."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is required to run replicas as PID 1")
    for wrapper in (
        ["unshare", "--pid", "--fork", "--kill-child"],
        ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child"],
    ):
        if subprocess.run([*wrapper, "true"], capture_output=True, check=False).returncode == 0:
            return wrapper
    pytest.fail("this machine allows no new PID namespace (needs root or user namespaces)")


def _gateway_pid(process: GatewayProcess) -> int:
    """The gateway's process id (as seen from here) under its `unshare` parent."""
    assert process.process is not None
    children = Path(f"/proc/{process.process.pid}/task/{process.process.pid}/children")
    (child,) = children.read_text().split()
    return int(child)


def _pid_inside(process: GatewayProcess) -> int:
    """The gateway's process id as its own PID namespace sees it."""
    status = Path(f"/proc/{_gateway_pid(process)}/status").read_text()
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError("no NSpid line")


@pytest.fixture
def pid_one_replica(
    gateway_process: Callable[..., GatewayProcess],
) -> Iterator[Callable[..., GatewayProcess]]:
    wrapper = _pid_namespace_wrapper()
    started: list[GatewayProcess] = []

    def make(name: str, **sections: object) -> GatewayProcess:
        process = gateway_process(name, **sections)
        process.wrapper = wrapper
        started.append(process)
        return process

    yield make
    for process in started:
        # `unshare` does not pass SIGTERM on: stop the gateway itself, unshare follows.
        if process.process is not None and process.process.poll() is None:
            with contextlib.suppress(ValueError, OSError):
                os.kill(_gateway_pid(process), signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.process.wait(15)


async def _try_connect(
    http: aiohttp.ClientSession, replica: GatewayProcess, token: str
) -> aiohttp.ClientWebSocketResponse | None:
    """A connection authenticated at the upgrade, or None when the limit refused it (429)."""
    try:
        return await http.ws_connect(replica.ws_url + "?token=" + token)
    except aiohttp.WSServerHandshakeError as e:
        if e.status != 429:
            raise
        return None


async def _admitted(http: aiohttp.ClientSession, replica: GatewayProcess, token: str) -> bool:
    ws = await _try_connect(http, replica, token)
    if ws is None:
        return False
    await ws.close()
    return True


async def test_two_pid_1_replicas_hold_a_user_to_five_connections(
    pid_one_replica: Callable[..., GatewayProcess], token: Callable[..., str]
) -> None:
    limits = {"connections_per_user": 5}
    first = await pid_one_replica("a", limits=limits).start()
    second = await pid_one_replica("b", limits=limits).start()
    assert _pid_inside(first) == _pid_inside(second) == 1
    async with aiohttp.ClientSession() as http:
        held = [await _try_connect(http, r, token()) for r in (first, second, first, second)]
        held.append(await _try_connect(http, first, token()))
        assert all(ws is not None for ws in held)
        assert await _try_connect(http, first, token()) is None
        assert await _try_connect(http, second, token()) is None
        bystander = await _try_connect(http, second, token(user="bob"))
        assert bystander is not None
        await bystander.close()


async def test_closing_a_connection_on_one_replica_never_frees_another_replicas_place(
    pid_one_replica: Callable[..., GatewayProcess], token: Callable[..., str]
) -> None:
    # Both replicas are PID 1 and number connections from 1: ids built from the
    # process id would be equal here, and the close on `a` would free `b`'s place too.
    limits = {"connections_per_user": 2}
    first = await pid_one_replica("a", limits=limits).start()
    second = await pid_one_replica("b", limits=limits).start()
    async with aiohttp.ClientSession() as http:
        on_first = await _try_connect(http, first, token())
        on_second = await _try_connect(http, second, token())
        assert on_first is not None
        assert on_second is not None
        await on_first.close()
        replacement = None
        for _ in range(100):  # the close reaches the table shortly after the socket closes
            replacement = await _try_connect(http, first, token())
            if replacement is not None:
                break
            await asyncio.sleep(0.05)
        assert replacement is not None
        assert await _try_connect(http, first, token()) is None
        assert await _try_connect(http, second, token()) is None
        assert not on_second.closed


async def test_a_killed_replicas_connections_stop_counting(
    pid_one_replica: Callable[..., GatewayProcess], token: Callable[..., str]
) -> None:
    limits = {"connections_per_user": 3, "connection_lease_seconds": 3}
    doomed = await pid_one_replica("a", limits=limits).start()
    survivor = await pid_one_replica("b", limits=limits).start()
    async with aiohttp.ClientSession() as http:
        held = [await _try_connect(http, doomed, token()) for _ in range(3)]
        assert all(ws is not None for ws in held)
        assert await _try_connect(http, survivor, token()) is None
        doomed.kill()  # SIGKILL to unshare; --kill-child takes the gateway with it
        admitted = False
        for _ in range(200):  # the bound is one lease (3 s); the test does not time it
            if await _admitted(http, survivor, token()):
                admitted = True
                break
            await asyncio.sleep(0.1)
        assert admitted
        # The dead replica's places are free, and the limit still holds on what is open now.
        kept = [await _try_connect(http, survivor, token()) for _ in range(3)]
        assert all(ws is not None for ws in kept)
        assert await _try_connect(http, survivor, token()) is None


async def test_idle_connections_cost_no_writes_to_the_connection_table(
    gateway_process: Callable[..., GatewayProcess],
    token: Callable[..., str],
    shared_nats,
    prefix: str,
) -> None:
    limits = {"connection_lease_seconds": 3}
    replica = await gateway_process("a", limits=limits).start()
    nc = await nats.connect(shared_nats.url)
    js = nc.jetstream()
    stream = f"KV_{admission_bucket(prefix)}"

    async def writes() -> int:
        return (await js.stream_info(stream)).state.last_seq

    async def idle_writes(seconds: float) -> int:
        before = await writes()
        await asyncio.sleep(seconds)
        return await writes() - before

    try:
        # No connector limit: the default (100) would queue connections past the hundredth.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            few = [await _try_connect(http, replica, token(user=f"u{n}")) for n in range(5)]
            idle_with_few = await idle_writes(3.5)
            many = [await _try_connect(http, replica, token(user=f"v{n}")) for n in range(200)]
            assert all(ws is not None for ws in few + many)
            idle_with_many = await idle_writes(3.5)
    finally:
        await nc.close()
    # One heartbeat per third of the lease, whatever the number of connections:
    # 3.5 s hold at most 3 or 4 of them, never one per user (205 here).
    assert idle_with_few <= 4
    assert idle_with_many <= 4


async def test_after_an_outage_longer_than_the_lease_a_replica_counts_its_connections_again(
    proxy, make_config, gateway_factory, token: Callable[..., str]
) -> None:
    limits = {"connections_per_user": 1, "connection_lease_seconds": 3}
    holder = await gateway_factory(make_config(nats_url=proxy.url, limits=limits))
    other = await gateway_factory(make_config(limits=limits))
    async with aiohttp.ClientSession() as http:
        held = await _try_connect(http, holder, token())
        assert held is not None
        assert await _try_connect(http, other, token()) is None
        # The holder loses NATS for longer than its heartbeat lives: meanwhile its
        # connection stops counting, and the other replica admits and releases one,
        # which drops the holder's entry from the table.
        await proxy.stop()  # links dropped, new ones refused: NATS is gone for the holder
        await asyncio.sleep(4)
        meanwhile = await _try_connect(http, other, token())
        assert meanwhile is not None
        await meanwhile.close()
        proxy.restore()
        await proxy.start()
        # Back on NATS, the holder puts its entry back (at its next heartbeat).
        refused = False
        for _ in range(100):
            ws = await _try_connect(http, other, token())
            if ws is None:
                refused = True
                break
            await ws.close()
            await asyncio.sleep(0.1)
        assert refused
        assert not held.closed


async def test_a_dead_replica_found_once_is_swept_from_every_users_table(
    gateway_factory, make_config
) -> None:
    running = await gateway_factory(make_config(limits={"connections_per_user": 1}))
    await running.gateway.wait_until_connected(10)
    bus, registry = running.gateway.bus, running.gateway.registry
    dead = "00dead00dead00de"  # a replica id with no heartbeat: crashed long ago
    for user in ("ghost-1", "ghost-2", "returning"):
        entry = orjson.dumps({f"{dead}-{user}": dead})
        assert await bus.table_write(user_key(user), entry, None)

    # The user who comes back is admitted at once: the dead replica's entry does not count.
    assert await registry.acquire("returning", registry.new_connection_id())

    # And the users who never come back do not keep its entries either.
    async def leftover() -> list[bytes | None]:
        return [(await bus.table_read(user_key(u)))[0] for u in ("ghost-1", "ghost-2")]

    for _ in range(200):
        if all(value in (None, b"{}") for value in await leftover()):
            break
        await asyncio.sleep(0.05)
    assert all(value in (None, b"{}") for value in await leftover())


@pytest.fixture
def held_releases(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., asyncio.Event]]:
    """`held_releases(registry)`: its releases reach the table only once the event is set
    (at the latest when the test ends)."""
    events: list[asyncio.Event] = []

    def hold(registry: Any) -> asyncio.Event:
        go = asyncio.Event()
        events.append(go)
        release = registry._release

        async def slowed(connection_ids: list[str], user: str) -> None:
            await go.wait()
            await release(connection_ids, user)

        monkeypatch.setattr(registry, "_release", slowed)
        return go

    yield hold
    for go in events:
        go.set()


async def _closed_here(running: Any, user: str = "alice") -> None:
    for _ in range(250):
        if running.gateway.registry.count(user) == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the close never reached the gateway")


async def test_reconnecting_at_once_is_admitted_while_the_release_is_still_on_its_way(
    gateway_factory, make_config, connect, token, held_releases
) -> None:
    running = await gateway_factory(make_config(limits={"connections_per_user": 1}))
    go = held_releases(running.gateway.registry)
    first = await connect(running.ws_url, token())
    await first.ws.close()
    await _closed_here(running)
    again = await connect(running.ws_url, token())
    # The late release does not free the place the new connection holds.
    go.set()
    await asyncio.sleep(0.2)
    async with aiohttp.ClientSession() as http:
        assert await _try_connect(http, running, token()) is None
    assert not again.ws.closed


async def test_a_release_on_its_way_frees_no_place_on_another_replica(
    gateway_factory, make_config, connect, token, held_releases
) -> None:
    limits = {"connections_per_user": 1}
    closing = await gateway_factory(make_config(limits=limits))
    other = await gateway_factory(make_config(limits=limits))
    go = held_releases(closing.gateway.registry)
    first = await connect(closing.ws_url, token())
    await first.ws.close()
    await _closed_here(closing)
    async with aiohttp.ClientSession() as http:
        # Until the release reaches the table, the other replica still counts the old entry.
        assert await _try_connect(http, other, token()) is None
        replacement = await _try_connect(http, closing, token())
        assert replacement is not None
        # The replacement took the old entry's place: still one connection across both.
        assert await _try_connect(http, other, token()) is None
        go.set()
        assert await _try_connect(http, other, token()) is None
        assert await _try_connect(http, closing, token()) is None
        await replacement.close()


async def test_admissions_in_flight_on_one_replica_count_against_each_other(
    gateway_factory, make_config
) -> None:
    running = await gateway_factory(make_config(limits={"connections_per_user": 1}))
    registry = running.gateway.registry
    ids = [registry.new_connection_id() for _ in range(4)]
    granted = await asyncio.gather(*(registry.acquire("alice", i) for i in ids))
    assert sorted(granted) == [False, False, False, True]
