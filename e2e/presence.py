"""Presence across gateway replicas: who is here, join/leave, a dead replica, the server API.

`presence_across_replicas` takes one WebSocket URL per replica (not the
ingress: each client must sit on a known replica) and, on one
`conversation` channel: subscribes two members on every replica and checks
that a watcher hears each one join; asks `presence` and `presence_stats` on
every replica and checks the answers agree; unsubscribes one member (a
`leave`); disconnects a user with a connection on every replica through the
server API of one replica (each closed with 4008); then kills the last
replica with `kill` and waits for its remaining member's `leave` (the
replica is taken for dead after a TTL of silence, checked every third of
it; the wait gives up after five TTLs). In the `Tally`, the expected "deliveries" are
those events plus one agreeing answer per replica; the note carries the
seconds from the kill to the `leave`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from e2e.scenarios import Tally
from neurelay.auth import mint_token
from neurelay.client import Client
from neurelay.protocol.codes import CloseCode
from neurelay.protocol.server_frames import Join, Leave

MEMBERS_PER_REPLICA = 2


async def presence_across_replicas(
    urls: list[str],
    secret: str,
    ttl_seconds: float,
    kill: Callable[[int], Awaitable[None]],
    run_id: str,
) -> Tally:
    started = time.monotonic()
    channel = f"conversation:presence-{run_id}"
    events: list[Join | Leave] = []
    heard = asyncio.Event()

    def hear(event: Join | Leave) -> None:
        events.append(event)
        heard.set()

    tally = Tally("presence across replicas")
    opened: list[Client] = []

    def token(user: str, **claims: Any) -> str:
        return mint_token(secret, f"{user}-{run_id}", channels=[channel], **claims)

    async def client(url: str, user: str, **claims: Any) -> Client:
        # Only the watcher's notices count: the members hear each other too.
        hears = hear if user == "watcher" else None
        c = Client(url, token(user, **claims), reconnect=False, on_join_leave=hears)
        await c.connect()
        opened.append(c)
        await c.subscribe(channel)
        return c

    def seen(kind: type[Join | Leave], connection: str) -> bool:
        return any(isinstance(e, kind) and e.member.connection == connection for e in events)

    try:
        watcher = await client(urls[0], "watcher")
        members: dict[tuple[int, int], Client] = {}
        for r, url in enumerate(urls):
            for i in range(MEMBERS_PER_REPLICA):
                members[r, i] = await client(url, f"m{r}-{i}", info={"replica": r})
        tally.clients = len(opened)
        # Each member's connection id, as the other replicas list it.
        listed = await watcher.presence(channel)
        connection = {m.user: m.connection for m in listed.clients}
        ids = {key: connection[f"m{key[0]}-{key[1]}-{run_id}"] for key in members}

        joins = await _wait(lambda: sum(seen(Join, c) for c in ids.values()), len(ids), 15, heard)
        tally.expected += len(ids)
        tally.delivered += joins

        # Every replica gives the same answer.
        everyone = sorted((m.user, m.connection) for m in listed.clients)
        agreeing = 0
        for r in range(len(urls)):
            asker = members[r, 0]
            answer = sorted((m.user, m.connection) for m in (await asker.presence(channel)).clients)
            stats = await asker.presence_stats(channel)
            if answer == everyone and (stats.users, stats.connections) == (
                len(everyone),
                len(everyone),
            ):
                agreeing += 1
        tally.expected += len(urls)
        tally.delivered += agreeing

        # An unsubscribe on the last replica is heard on the first.
        last = len(urls) - 1
        await members[last, 1].unsubscribe(channel)
        tally.expected += 1
        tally.delivered += await _wait(lambda: int(seen(Leave, ids[last, 1])), 1, 15, heard)

        # The server API of one replica disconnects the user everywhere.
        closes = await _disconnect_everywhere(urls, secret, f"target-{run_id}")
        tally.expected += len(urls)
        tally.delivered += closes

        # A replica killed: its member leaves within the TTL.
        killed_at = time.monotonic()
        await kill(last)
        gone = await _wait(lambda: int(seen(Leave, ids[last, 0])), 1, ttl_seconds * 5, heard)
        after = time.monotonic() - killed_at
        tally.expected += 1
        tally.delivered += gone
        tally.note = (
            f"{agreeing}/{len(urls)} replicas agree on presence and stats; leave "
            f"{after:.1f}s after kill -9 (TTL {ttl_seconds:g}s); disconnect closed "
            f"{closes}/{len(urls)}"
        )
        tally.sent = tally.acknowledged = tally.expected
        tally.lost = tally.expected - tally.delivered
    finally:
        await asyncio.gather(*(c.close() for c in opened), return_exceptions=True)
    tally.seconds = time.monotonic() - started
    return tally


async def _wait(count: Callable[[], int], wanted: int, timeout: float, heard: asyncio.Event) -> int:
    """`count()` once it reaches `wanted`, or whatever it is after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while count() < wanted and time.monotonic() < deadline:
        heard.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(heard.wait(), deadline - time.monotonic())
    return count()


async def _disconnect_everywhere(urls: list[str], secret: str, user: str) -> int:
    """Connections of `user`, one per replica, closed with 4008 by one server API call."""
    admin = mint_token(secret, "ops", admin=True)
    async with aiohttp.ClientSession() as http:
        sockets = [await http.ws_connect(f"{url}?token={mint_token(secret, user)}") for url in urls]
        try:
            api = urls[0].replace("ws://", "http://").removesuffix("/ws")
            async with http.post(
                f"{api}/api/v1/users/{user}/disconnect",
                headers={"Authorization": f"Bearer {admin}"},
            ) as response:
                body = await response.json()
            codes = [await _close_code(ws) for ws in sockets]
        finally:
            for ws in sockets:
                await ws.close()
    closed = sum(code == CloseCode.DISCONNECTED for code in codes)
    return closed if body.get("connections") == len(urls) else 0


async def _close_code(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """The code the server closed `ws` with (`ws.close_code` may say 1006 instead)."""
    with contextlib.suppress(TimeoutError):
        while True:
            msg = await ws.receive(timeout=15)
            if msg.type is aiohttp.WSMsgType.CLOSE:
                return int(msg.data)
            if msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                break
            if msg.type is aiohttp.WSMsgType.ERROR:
                break
    return ws.close_code
