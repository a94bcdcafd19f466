"""Coordinating: the replicas of one gateway talking to each other over NATS.

Three things travel between replicas, all on core NATS under the gateway's
subject prefix, none needing new infrastructure:

- `<prefix>.p.ask`: a presence query or a server API command, sent once and
  answered by every other replica on the asker's inbox, in parts
  (`gathering.split`), and by the asker itself directly; the asker waits
  until every replica it knows to be alive has answered, or
  `presence.request_timeout_seconds`.
- `<prefix>.p.beat`: each replica's sign of life every third of
  `presence.ttl_seconds`. A replica silent for five sixths of the TTL (looked
  at every sixth, so within the TTL of its last beat) is taken for dead and
  the callback `on_replica_gone` sends `leave` for its connections. A replica
  heard again after that is asked for its members anew (`on_replica_back`).
  A replica that has not read its own previous beat back is behind on what
  NATS sent it and takes nobody for dead until it has caught up; so is one
  whose look comes a whole look late (its event loop was starved, by a
  storm or a pause), which beats at once and waits for that beat to come
  back, so the others' beats that arrived meanwhile are read first.
- Join/leave notices go on the channel's own live subject with the
  `Neurelay-Event` header, so only replicas following the channel get them,
  in order with its messages (see `hub`). Those of one channel queued in one
  pass of the event loop travel in one message (an array), so a storm of
  arrivals costs NATS a message per channel per pass, not one per arrival.

Revocations are kept in the key-value bucket `<prefix>_revocations`, whose
entries lapse after the longest token lifetime; every replica watches it and
keeps `live.revocations` current, so a revoked token is refused everywhere,
also by replicas started later. A revocation read there is also applied to
this replica's open connections, `presence.request_timeout_seconds` later:
the broadcast `revoke` command normally comes first and is the one whose
count the server API reports (the asker stops listening after that timeout
anyway), but a replica that missed it (cut off from NATS for a moment, or
the replica that stored it died before sending it) still closes them with
4009. Closing is idempotent, so applying a revocation twice does no harm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from nats.aio.msg import Msg

from neurelay.errors import BusError, ProtocolError
from neurelay.gateway.admission import user_key
from neurelay.gateway.bus import Bus, Listening
from neurelay.gateway.gathering import PART_BYTES, REPLICA_HEADER, Gathering, Peers, split
from neurelay.gateway.presence import EVENT_HEADER, EventKind, LocalPresence, Member, encode_events
from neurelay.gateway.settings import LiveSettings
from neurelay.protocol.channels import Channel

CommandHandler = Callable[[dict[str, Any]], Awaitable[int]]
ReplicaHandler = Callable[[str], Awaitable[None]]

# A replica looks for silent peers every LOOK of `presence.ttl_seconds` and beats every
# LOOKS_PER_BEAT looks (a third of it); a silence of DEAD of it is death. So a death is
# noticed at most DEAD + LOOK after the last beat (within the TTL), and a beat may come
# DEAD - LOOK * LOOKS_PER_BEAT (half the TTL) late without being taken for death.
LOOK = 1 / 6
LOOKS_PER_BEAT = 2
DEAD = 5 / 6


class Coordinator:
    """This replica's side of presence, join/leave, commands and revocations."""

    def __init__(
        self,
        bus: Bus,
        live: LiveSettings,
        replica: str,
        logger: logging.Logger,
        *,
        on_command: CommandHandler,
        on_replica_gone: ReplicaHandler,
        on_replica_back: ReplicaHandler,
    ) -> None:
        self.replica = replica
        self.local = LocalPresence()
        self._bus = bus
        self._live = live
        self._log = logger
        self._on_command = on_command
        self._on_replica_gone = on_replica_gone
        self._on_replica_back = on_replica_back
        self._peers = Peers(replica, time.time())
        self._lost: set[str] = set()
        self._subscriptions: list[Listening] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._revocations_loaded = asyncio.Event()
        # Per user, the revocation waiting to be applied here (see `_apply_later`).
        self._backstops: dict[str, tuple[int, asyncio.Task[None]]] = {}
        self._beats_sent = 0
        self._beats_echoed = 0
        self._last_look_beat = 0  # the number of the last beat `_beating` sent
        # Join/leave notices of this pass by channel, and the task sending them.
        self._notices: dict[str, tuple[Channel, list[tuple[EventKind, Member]]]] = {}
        self._announcing: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen to the other replicas and announce this one; NATS must be connected."""
        bus = self._bus
        if not self._subscriptions:
            self._subscriptions = [
                await bus.listen(bus.subject("ask"), self._on_ask),
                await bus.listen(bus.subject("beat"), self._on_beat),
            ]
            self._tasks = [
                asyncio.create_task(self._beating(), name="neurelay-presence-beat"),
                asyncio.create_task(self._watching_revocations(), name="neurelay-revocations"),
            ]
            # Not ready before the revocations stored so far are known: a replica started
            # after a revocation must refuse the revoked tokens from its first connection.
            timeout = self._live.config.presence.request_timeout_seconds
            try:
                await asyncio.wait_for(self._revocations_loaded.wait(), timeout)
            except TimeoutError:
                self._log.warning("revocations not loaded within %.1fs; going on", timeout)
        await self._beat(hello=True)

    async def stop(self) -> None:
        if self._announcing is not None:
            # The leaves of the connections just closed go out before this replica does.
            timeout = self._live.config.presence.request_timeout_seconds
            await asyncio.wait({self._announcing}, timeout=timeout)
        pending = set(self._tasks) | {task for _, task in self._backstops.values()}
        if self._announcing is not None:
            pending.add(self._announcing)
        # nats-py may swallow a cancellation inside a JetStream call; cancel until it sticks.
        for _ in range(50):
            if not pending:
                break
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                self._log.debug("%s ended: %r", task.get_name(), task.exception())
        self._tasks.clear()
        for subscription in self._subscriptions:
            await self._bus.unfollow(subscription)
        self._subscriptions.clear()

    # -- asking every replica ----------------------------------------------------------------

    async def ask(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Every replica's answer to `query` (those that answered in time)."""
        return list((await self._gather(query)).answers().values())

    async def ask_for_bytes(self, query: dict[str, Any]) -> list[bytes]:
        """Every replica's answer to `query` as sent (a presence `Listing`), undecoded."""
        return list((await self._gather(query)).data().values())

    async def _gather(self, query: dict[str, Any]) -> Gathering:
        gathering = Gathering(self._peers.alive())
        complete = asyncio.Event()

        async def on_part(msg: Msg) -> None:
            gathering.accept(msg.headers, msg.data)
            if gathering.done:
                complete.set()

        bus = self._bus
        inbox = bus.new_inbox()
        subscription = await bus.listen(inbox, on_part)
        try:
            await bus.send(
                bus.subject("ask"), orjson.dumps(query), {REPLICA_HEADER: self.replica}, inbox
            )
            # This replica's own part is taken here rather than sent to itself through NATS.
            own = await self._answer(query)
            if own is not None:
                gathering.take(self.replica, own if isinstance(own, bytes) else orjson.dumps(own))
            if not gathering.done:
                timeout = self._live.config.presence.request_timeout_seconds
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(complete.wait(), timeout)
        finally:
            await bus.unfollow(subscription)
        if not gathering.done:
            missing = sorted(gathering.expected - set(gathering.data()))
            self._log.warning("no answer in time from replica(s) %s", ", ".join(missing))
        return gathering

    async def _answer(self, query: object) -> dict[str, Any] | bytes | None:
        """This replica's answer to a query or command; None (logged) when it is malformed."""
        try:
            if not isinstance(query, dict):
                raise ValueError("a query must be an object")
            if "cmd" in query:
                return {"connections": await self._on_command(query)}
            return self.local.answer(query)
        except (ValueError, TypeError, ProtocolError) as e:
            self._log.warning("ignored a malformed query: %s", e)
            return None

    async def _on_ask(self, msg: Msg) -> None:
        if not msg.reply or (msg.headers or {}).get(REPLICA_HEADER) == self.replica:
            return  # an asker answers itself (see `_gather`)
        try:
            query = orjson.loads(msg.data)
        except orjson.JSONDecodeError as e:
            self._log.warning("ignored a query that is not JSON: %s", e)
            return
        body = await self._answer(query)
        if body is None:
            return
        try:
            for headers, data in split(body, self.replica):
                await self._bus.send(msg.reply, data, headers)
        except BusError as e:
            self._log.warning("could not answer a query: %s", e)

    # -- join/leave --------------------------------------------------------------------------

    def announce(self, kind: EventKind, channel: Channel, member: Member) -> None:
        """Tell every replica following `channel`, with the other notices of this pass.

        Lost if NATS is down (presence stays right). Notices of one channel keep their
        order: one task sends them all, one channel's pending notices in one message.
        """
        pending = self._notices.get(channel.name)
        if pending is None:
            pending = self._notices[channel.name] = (channel, [])
        pending[1].append((kind, member))
        if self._announcing is None:
            self._announcing = asyncio.create_task(
                self._announce_pending(), name="neurelay-notices"
            )

    async def _announce_pending(self) -> None:
        try:
            await asyncio.sleep(0)  # after the arrivals already ready in this pass
            while self._notices:
                notices, self._notices = self._notices, {}
                for channel, events in notices.values():
                    try:
                        for data in encode_events(events, PART_BYTES):
                            await self._bus.announce(channel, data, {EVENT_HEADER: "batch"})
                    except BusError as e:
                        self._log.debug("notices on %s not announced: %s", channel.name, e)
        finally:
            self._announcing = None

    # -- heartbeats --------------------------------------------------------------------------

    async def _beat(self, hello: bool = False) -> None:
        self._beats_sent += 1
        body = {"r": self.replica, "n": self._beats_sent, "hello": hello}
        try:
            await self._bus.send(self._bus.subject("beat"), orjson.dumps(body))
        except BusError as e:
            self._log.debug("heartbeat not sent: %s", e)

    async def _on_beat(self, msg: Msg) -> None:
        try:
            body = orjson.loads(msg.data)
            replica, hello, number = body["r"], bool(body.get("hello")), body.get("n", 0)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return
        if replica == self.replica and isinstance(number, int):
            # Our own beat came back: every beat sent before it has been read too.
            self._beats_echoed = max(self._beats_echoed, number)
            return
        if not isinstance(replica, str):
            return
        self._peers.heard(replica, time.time())
        if hello:
            await self._beat()  # so the newcomer knows us before it asks anything
        if replica in self._lost:
            self._lost.discard(replica)
            await self._on_replica_back(replica)

    def _unread_beat(self) -> bool:
        """True when this replica has not yet read back the last beat its loop of looks sent.

        Then beats of the others may be waiting unread too: silence is not death. (Without
        NATS at all nothing comes back, and the others count as silent, as they are.)
        """
        return self._bus.connected and self._beats_echoed < self._last_look_beat

    async def _beating(self) -> None:
        looked = 0
        while True:
            ttl = self._live.config.presence.ttl_seconds
            interval = ttl * LOOK
            due = time.monotonic() + interval
            await asyncio.sleep(interval)
            # Woken a whole look late, this replica's loop was starved: what NATS sent it
            # meanwhile (the others' beats among it) is still unread, however long ago its
            # last beat came back. A beat sent now comes back once all of that is read.
            late = time.monotonic() - due > interval
            behind = late or self._unread_beat()
            looked += 1
            if looked == LOOKS_PER_BEAT or late:
                looked = 0
                await self._beat()
                self._last_look_beat = self._beats_sent
            if behind:
                self._log.info("reading NATS behind; nobody is taken for dead this round")
                continue
            silence = ttl * DEAD
            for replica in self._peers.expire(time.time(), silence):
                self._log.warning(
                    "replica %s silent for %.1fs: its connections leave", replica, silence
                )
                self._lost.add(replica)
                await self._on_replica_gone(replica)

    # -- revocations -------------------------------------------------------------------------

    async def revoke(self, user: str, issued_before_ms: int) -> int:
        """Store a revocation for every replica; returns the one in force (ms)."""
        lifetime = self._live.config.auth.max_token_lifetime_seconds
        in_force = issued_before_ms

        def change(current: bytes | None) -> bytes | None:
            nonlocal in_force
            before = _revocation(current)[1] if current else 0
            if before >= issued_before_ms:
                in_force = before
                return None
            return orjson.dumps({"user": user, "before": issued_before_ms})

        await self._bus.revocation_update(user_key(user), lifetime, change)
        self._remember(user, in_force)
        return in_force

    def _remember(self, user: str, issued_before_ms: int) -> None:
        lifetime = self._live.config.auth.max_token_lifetime_seconds
        # No token issued before the cut-off outlives it by more than the longest lifetime.
        self._live.revocations.revoke(user, issued_before_ms, issued_before_ms / 1000 + lifetime)

    async def _watching_revocations(self) -> None:
        delay = 0.5
        while True:
            try:
                lifetime = self._live.config.auth.max_token_lifetime_seconds
                # Closed here, not by the garbage collector, so no task outlives the watch.
                async with contextlib.aclosing(self._bus.watch_revocations(lifetime)) as updates:
                    async for value in updates:
                        delay = 0.5
                        if value is None:
                            self._revocations_loaded.set()
                            continue
                        try:
                            user, before = _revocation(value)
                            known = self._live.revocations.cut_off(user, time.time())
                            self._remember(user, before)
                            # Known already (from the command, or read before the watch
                            # restarted): applied already, so not again for every connection.
                            if known is None or known < before:
                                self._apply_later(user, before)
                        except ValueError as e:
                            self._log.warning("ignored a malformed revocation: %s", e)
            except BusError as e:
                self._log.warning("revocation watch interrupted: %s", e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _apply_later(self, user: str, before: int) -> None:
        """Close `user`'s connections revoked by `before` unless the command did already."""
        waiting = self._backstops.get(user)
        if waiting is not None and waiting[0] >= before:
            return
        if waiting is not None:
            waiting[1].cancel()  # the later cut-off covers every token the earlier one did
        task = asyncio.create_task(self._apply(user, before), name="neurelay-revocation")
        self._backstops[user] = (before, task)

        def done(_: asyncio.Task[None]) -> None:
            if self._backstops.get(user, (0, None))[1] is task:
                del self._backstops[user]

        task.add_done_callback(done)

    async def _apply(self, user: str, before: int) -> None:
        await asyncio.sleep(self._live.config.presence.request_timeout_seconds)
        try:
            await self._on_command({"cmd": "revoke", "user": user, "before": before})
        except ValueError as e:
            self._log.warning("revocation of %s not applied: %s", user, e)


def _revocation(value: bytes) -> tuple[str, int]:
    try:
        body = orjson.loads(value)
        user, before = body["user"], body["before"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"not a revocation: {e}") from e
    if not isinstance(user, str) or not isinstance(before, int):
        raise ValueError("a revocation needs a string 'user' and an integer 'before'")
    return user, before
