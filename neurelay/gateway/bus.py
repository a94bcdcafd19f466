"""Bus: everything the gateway asks of NATS and JetStream, with errors mapped to ours.

Publishing (JetStream with a message id for namespaces that keep history,
core NATS otherwise), following a channel's live subject, reading a channel's
history for resume, creating streams, the shared key-value table behind
the per-user connection limit, the revocation table, and the plain core
subjects replicas talk over (presence queries, commands, heartbeats). Any
nats-py exception is turned into
`BusUnavailable` or `BusError` here, through the one mapping of
`neurelay.jetstream.errors`; streams are synced through `neurelay.jetstream`.
A connection nats-py closes for good (it does on any error the server
reports, such as a message over max_payload) is replaced by a new one:
every `Listening` is subscribed again on it and `on_reconnected` runs, as
after one of nats-py's own reconnects.
It is longer than most modules because it is the gateway's one door to
nats-py: splitting it would give nats-py a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from neurelay.backoff import Backoff
from neurelay.config import NamespaceSettings, NatsSettings
from neurelay.errors import BusError, BusUnavailable, PayloadTooLarge
from neurelay.gateway import replaying
from neurelay.gateway.replaying import History
from neurelay.jetstream.errors import NATS_ERRORS, bus_error, mapped
from neurelay.jetstream.publishing import AckedPublishing, AckReceiver, nats_size
from neurelay.jetstream.streams import desired_stream
from neurelay.jetstream.syncing import sync_stream
from neurelay.protocol.channels import Channel, live_subject, stored_subject

MessageHandler = Callable[[Msg], Awaitable[None]]
_REPLACE_BACKOFF = Backoff(initial_seconds=0.5, max_seconds=10.0)
T = TypeVar("T")


class Listening:
    """A subscription of the bus's: kept across a replaced connection until `unfollow`."""

    __slots__ = ("handler", "subject", "subscription")

    def __init__(self, subject: str, handler: MessageHandler, subscription: Subscription) -> None:
        self.subject = subject
        self.handler = handler
        self.subscription: Subscription | None = subscription


class Bus:
    """One NATS connection of a gateway process."""

    def __init__(self, settings: NatsSettings, logger: logging.Logger) -> None:
        self.settings = settings
        self.prefix = settings.subject_prefix
        self._log = logger
        self._nc: NatsClient | None = None
        self._kv: KeyValue | None = None
        self._acks: AckedPublishing | None = None
        self._revocations: KeyValue | None = None
        self.on_reconnected: Callable[[], Awaitable[None]] | None = None
        self._listenings: set[Listening] = set()
        # Resolved when the current connection is closed for good; ends the watches on it.
        self._lost: asyncio.Future[None] | None = None
        self._replacing: asyncio.Task[None] | None = None
        self._closing = False
        # History reads in flight at once; more wait, so replays cannot swamp JetStream.
        self._replays = asyncio.Semaphore(settings.replay_concurrency)
        self.reconnects = 0
        # Streams JetStream cannot bring to the configuration, with why; set by ensure_streams.
        self.stream_problems: dict[str, str] = {}
        # Counts losses of the connection: a replay that spans one cannot vouch for its batches.
        self.disconnects = 0

    # -- connection ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def connect(self) -> None:
        """Connect, retrying forever; returns once connected."""
        self._nc, self._acks = await self._dial()
        self._log.info("connected to NATS", extra={"servers": self.settings.servers})

    async def _dial(self) -> tuple[NatsClient, AckedPublishing]:
        lost = asyncio.get_running_loop().create_future()
        nc: NatsClient | None = None

        async def on_closed() -> None:
            if not lost.done():
                lost.set_result(None)
            if nc is self._nc and not self._closing and self._replacing is None:
                self._replacing = asyncio.create_task(self._replace(), name="neurelay-nats-replace")

        with mapped("cannot connect to NATS"):
            nc = await nats.connect(
                servers=self.settings.servers,
                user_credentials=self.settings.credentials_file,
                connect_timeout=self.settings.connect_timeout_seconds,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
                name="neurelay-gateway",
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                closed_cb=on_closed,
                pending_size=64 * 1024 * 1024,
            )
        acks = AckedPublishing(nc, self.settings.request_timeout_seconds)
        try:
            await acks.start()
        except BusError:
            await _close_quietly(nc)
            raise
        self._lost = lost
        return nc, acks

    async def _replace(self) -> None:
        """Dial a new connection for one nats-py closed for good, until one is set up."""
        try:
            await self._replacing_connection()
        finally:
            self._replacing = None
        nc = self._nc
        if nc is not None and nc.is_closed and not self._closing:
            # The new connection was closed for good too, while being set up.
            self._replacing = asyncio.create_task(self._replace(), name="neurelay-nats-replace")

    async def _replacing_connection(self) -> None:
        self.disconnects += 1
        self._log.error("the NATS connection was closed for good; connecting anew")
        if self._acks is not None:
            await self._acks.stop()  # their acks cannot come any more
        self._kv = self._revocations = None  # bound to the closed connection
        attempt = 0
        while True:
            try:
                nc, acks = await self._dial()
            except BusError as e:
                delay = _REPLACE_BACKOFF.delay(attempt)
                attempt += 1
                self._log.warning("new NATS connection not set up, retrying in %.1fs: %s", delay, e)
                await asyncio.sleep(delay)
                continue
            self._nc, self._acks = nc, acks
            break
        for listening in list(self._listenings):
            await self._resubscribe(listening)
        self.reconnects += 1
        self._log.info("connected to NATS anew")
        if self.on_reconnected is not None:
            await self.on_reconnected()

    async def _resubscribe(self, listening: Listening) -> None:
        listening.subscription = None
        try:
            subscription = await self._subscribe(listening.subject, listening.handler)
        except BusError as e:
            self._log.error("not listening to %s any more: %s", listening.subject, e)
            return
        if listening in self._listenings:
            listening.subscription = subscription
        else:  # unfollowed meanwhile
            with contextlib.suppress(*NATS_ERRORS):
                await subscription.unsubscribe()

    async def close(self) -> None:
        self._closing = True
        if self._replacing is not None:
            self._replacing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replacing
            self._replacing = None
        if self._acks is not None:
            await self._acks.stop()
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.close()
            except NATS_ERRORS as e:
                self._log.debug("NATS connection closed uncleanly: %s", e)

    async def _on_error(self, error: Exception) -> None:
        self._log.warning("NATS error: %s", error)

    async def _on_disconnected(self) -> None:
        self.disconnects += 1
        self._log.warning("disconnected from NATS")

    async def _on_reconnected(self) -> None:
        self.reconnects += 1
        self._log.info("reconnected to NATS")
        if self.on_reconnected is not None:
            await self.on_reconnected()

    def _client(self) -> NatsClient:
        if self._nc is None or not self._nc.is_connected:
            raise BusUnavailable("NATS is not connected")
        return self._nc

    async def ping(self) -> None:
        """Round trip to JetStream; raises BusUnavailable when it does not answer."""
        with mapped("JetStream did not answer"):
            await self._client().jetstream().account_info()

    # -- streams -----------------------------------------------------------------------------

    async def ensure_streams(self, namespaces: dict[str, NamespaceSettings]) -> None:
        """Create or correct the stream of every namespace that keeps history.

        Raises only `BusUnavailable` (retry later). A stream JetStream will
        not bring to the configuration (it refuses it, or a field differs
        that cannot change in place) is never retried: it is logged as an
        error and kept in `stream_problems`, which readiness reports, until
        a later set-up (reload, reconnect, restart) succeeds.
        """
        js = self._client().jetstream(timeout=self.settings.request_timeout_seconds)
        problems: dict[str, str] = {}
        for namespace, settings in namespaces.items():
            if not settings.keeps_history:
                continue
            config = desired_stream(self.prefix, namespace, settings)
            name = config.name or namespace
            try:
                outcome = await sync_stream(js, config)
            except BusUnavailable:
                raise
            except BusError as e:
                problems[name] = str(e)
                continue
            if outcome.problem is not None:
                problems[name] = (
                    f"{outcome.problem}; restore the configuration or delete the stream "
                    "(its history goes with it) to have it re-created"
                )
            elif outcome.action != "unchanged":
                detail = f": {outcome.drift.describe()}" if outcome.drift else ""
                self._log.info("stream %s %s%s", name, outcome.action, detail)
        for name, problem in problems.items():
            self._log.error("stream %s cannot be set up: %s", name, problem, extra={"stream": name})
        self.stream_problems = problems

    # -- publishing --------------------------------------------------------------------------

    @property
    def publishes_in_flight(self) -> int:
        """Publishes written to JetStream whose acks have not come yet."""
        return 0 if self._acks is None else self._acks.in_flight

    async def publish(
        self,
        channel: Channel,
        body: bytes,
        message_key: str | None,
        keeps_history: bool,
        receiver: AckReceiver,
        key: Any,
    ) -> None:
        """Write one message now, in call order; `receiver.settle(key, ...)` is told its
        outcome once: (sequence, duplicate), sequence 0 when not retained (core NATS), or
        the BusError. Raises BusError when it cannot be written (then it is told nothing)."""
        nc = self._client()
        if not keeps_history:
            with mapped("publish failed"):
                await nc.publish(live_subject(self.prefix, channel), body)
            receiver.settle(key, (0, False))
            return
        if self._acks is None:
            raise BusUnavailable("NATS is not connected")
        headers = {"Nats-Msg-Id": message_key} if message_key else None
        await self._acks.send(stored_subject(self.prefix, channel), body, headers, receiver, key)

    # -- following ---------------------------------------------------------------------------

    async def follow(self, channel: Channel, handler: MessageHandler) -> Listening:
        """Subscribe to the channel's live subject; returns once the server has the interest."""
        return await self.listen(live_subject(self.prefix, channel), handler)

    async def unfollow(self, listening: Listening) -> None:
        self._listenings.discard(listening)
        subscription, listening.subscription = listening.subscription, None
        if subscription is None:
            return
        try:
            await subscription.unsubscribe()
        except nats.errors.Error as e:
            self._log.debug("unsubscribe failed (connection closing?): %s", e)

    # -- history -----------------------------------------------------------------------------

    async def history(
        self, channel: Channel, since: int | None, last: int | None, limit: int, max_bytes: int
    ) -> History:
        """Retained messages after `since` (at most `limit`), or the last `last` of them,
        at most `max_bytes` of them (the newest kept, then `recovered` is false)."""
        async with self._replays:
            return await self._replaying(
                lambda nc, budget: replaying.history(
                    nc, self.prefix, channel, since, last, limit, budget
                ),
                max_bytes,
            )

    async def last_seq(self, channel: Channel) -> int:
        """Sequence of the newest retained message on the channel, 0 if none."""
        newest = await self._replaying(
            lambda nc, budget: replaying.last_message(nc, self.prefix, channel, budget),
            self.settings.replay_batch_bytes,
        )
        return newest.seq if newest is not None else 0

    async def _replaying(
        self, read: Callable[[NatsClient, replaying.Budget], Awaitable[T]], max_bytes: int
    ) -> T:
        budget = replaying.Budget(
            batch_bytes=self.settings.replay_batch_bytes,
            max_bytes=max_bytes,
            timeout=self.settings.request_timeout_seconds,
        )
        disconnects = self.disconnects
        try:
            result = await read(self._client(), budget)
        except NATS_ERRORS as e:
            raise bus_error(e, "history failed") from e
        except replaying.ReplayError as e:
            raise BusError(f"history failed: {e}") from e
        if self.disconnects != disconnects:
            # Replies sent while the connection was down are lost, whatever the batch said.
            raise BusUnavailable("history unavailable: the NATS connection dropped meanwhile")
        return result

    # -- admission table --------------------------------------------------------------------

    async def lease_bucket(self) -> KeyValue:
        """The key-value bucket behind the per-user connection limit (created if missing).

        No bucket-wide age limit: a user's entry is written only when they connect or
        disconnect, so it must outlive any connection. Heartbeats and emptied entries carry
        their own per-message TTL instead.
        """
        if self._kv is None:
            js = self._client().jetstream(timeout=self.settings.request_timeout_seconds)
            config = KeyValueConfig(
                bucket=admission_bucket(self.prefix), history=1, storage=StorageType.FILE
            )
            with mapped("connection table failed"):
                self._kv = await js.create_key_value(config=config)
        return self._kv

    async def table_read(self, key: str) -> tuple[bytes | None, int]:
        """(value, revision) at `key`; (None, revision of the tombstone or 0) when absent."""
        kv = await self.lease_bucket()
        try:
            entry = await kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError) as e:
            deleted = e.entry
            return None, (deleted.revision or 0) if deleted is not None else 0
        except NATS_ERRORS as e:
            raise bus_error(e, "connection table failed") from e
        return entry.value, entry.revision or 0

    async def table_write(
        self, key: str, value: bytes, revision: int | None, ttl: float | None = None
    ) -> bool:
        """Write `value` if `key` is still at `revision` (None: unconditionally).

        Returns False when another writer got there first. `ttl` (whole seconds) makes
        the server delete the value by itself unless it is overwritten before.
        """
        await self.lease_bucket()
        headers = {} if revision is None else {"Nats-Expected-Last-Subject-Sequence": str(revision)}
        try:
            js = self._client().jetstream(timeout=self.settings.request_timeout_seconds)
            await js.publish(
                f"$KV.{admission_bucket(self.prefix)}.{key}",
                value,
                headers=headers or None,
                msg_ttl=None if ttl is None else max(1, math.ceil(ttl)),
            )
        except nats.js.errors.APIError as e:
            if e.err_code in (10071, 10164):  # wrong last sequence: lost the race
                return False
            raise bus_error(e, "connection table failed") from e
        except NATS_ERRORS as e:
            raise bus_error(e, "connection table failed") from e
        return True

    async def table_keys(self, pattern: str) -> list[str]:
        """Keys matching `pattern` (a NATS subject filter within the bucket).

        Read with a filtered watch: nats-py's `keys(filters=...)` matches substrings.
        """
        kv = await self.lease_bucket()
        keys: list[str] = []
        try:
            watcher = await kv.watch(pattern, ignore_deletes=True, meta_only=True)
            try:
                timeout = self.settings.request_timeout_seconds
                # None: the watch has caught up.
                while (entry := await watcher.updates(timeout)) is not None:  # type: ignore[no-untyped-call]
                    keys.append(entry.key)
            finally:
                await watcher.stop()  # type: ignore[no-untyped-call]
        except NATS_ERRORS as e:
            raise bus_error(e, "connection table failed") from e
        return keys

    # -- revocations -------------------------------------------------------------------------

    async def revocation_bucket(self, ttl_seconds: float) -> KeyValue:
        """The table of revoked users; an entry lapses after `ttl_seconds` (token lifetime)."""
        if self._revocations is None:
            js = self._client().jetstream(timeout=self.settings.request_timeout_seconds)
            config = KeyValueConfig(
                bucket=f"{self.prefix}_revocations",
                history=1,
                ttl=ttl_seconds,
                storage=StorageType.FILE,
            )
            with mapped("revocation table failed"):
                self._revocations = await js.create_key_value(config=config)
        return self._revocations

    async def revocation_update(
        self, key: str, ttl_seconds: float, change: Callable[[bytes | None], bytes | None]
    ) -> None:
        """Apply `change` to the revocation at `key` atomically; None from `change` = keep."""
        kv = await self.revocation_bucket(ttl_seconds)
        with mapped("revocation table failed"):
            for _ in range(16):
                try:
                    entry = await kv.get(key)
                    current, revision = entry.value, entry.revision
                except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                    current, revision = None, None
                updated = change(current)
                if updated is None:
                    return
                try:
                    if revision is None:
                        await kv.create(key, updated)
                    else:
                        await kv.update(key, updated, last=revision)
                except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
                    continue  # another replica wrote first: look again
                return
        raise BusError(f"too much contention on revocation {key}")

    async def watch_revocations(self, ttl_seconds: float) -> AsyncGenerator[bytes | None, None]:
        """Every revocation stored now, then None (caught up), then every new one."""
        kv = await self.revocation_bucket(ttl_seconds)
        lost = self._lost
        assert lost is not None  # set with the connection revocation_bucket used
        # A watch cancelled half-way leaves nats-py's consumer and its heartbeat task behind:
        # it is finished, then stopped.
        creating = asyncio.ensure_future(kv.watchall(ignore_deletes=True))
        with mapped("revocation table failed"):
            try:
                watcher = await asyncio.shield(creating)
            except asyncio.CancelledError:
                with contextlib.suppress(*NATS_ERRORS):
                    await (await creating).stop()  # type: ignore[no-untyped-call]
                raise
        try:
            async for entry in _until_lost(watcher, lost):
                if entry is None:
                    yield None
                elif entry.value:
                    yield entry.value
        finally:
            try:
                await watcher.stop()  # type: ignore[no-untyped-call]
            except NATS_ERRORS as e:
                self._log.debug("revocation watch not stopped cleanly: %s", e)
                # On a closed connection nats-py raises before cancelling the watch's
                # heartbeat check, which would otherwise run on for two heartbeats.
                core = getattr(watcher._sub, "_sub", None)
                heartbeat = getattr(getattr(core, "_jsi", None), "_hbtask", None)
                if heartbeat is not None:
                    heartbeat.cancel()

    # -- talking to the other replicas (core NATS) -------------------------------------------

    def subject(self, *tokens: str) -> str:
        """A subject of the replicas' own tree, `<prefix>.p.…`, apart from channel subjects."""
        return ".".join((self.prefix, "p", *tokens))

    def new_inbox(self) -> str:
        return self._client().new_inbox()

    async def listen(self, subject: str, handler: MessageHandler) -> Listening:
        """Subscribe to a plain subject; returns once the server has the interest."""
        listening = Listening(subject, handler, await self._subscribe(subject, handler))
        self._listenings.add(listening)
        return listening

    async def _subscribe(self, subject: str, handler: MessageHandler) -> Subscription:
        nc = self._client()
        with mapped("cannot subscribe"):
            subscription = await nc.subscribe(
                subject, cb=handler, pending_msgs_limit=-1, pending_bytes_limit=-1
            )
            await nc.flush(timeout=math.ceil(self.settings.request_timeout_seconds))
        return subscription

    async def announce(self, channel: Channel, data: bytes, headers: dict[str, str]) -> None:
        """Core NATS publish on a channel's live subject (join/leave notices)."""
        await self.send(live_subject(self.prefix, channel), data, headers)

    async def send(
        self,
        subject: str,
        data: bytes,
        headers: dict[str, str] | None = None,
        reply: str = "",
    ) -> None:
        """Core NATS publish, at most once."""
        nc = self._client()
        if nats_size(data, headers) > nc.max_payload:
            # Sent anyway, it would make the server drop the connection.
            raise PayloadTooLarge("send failed: the message exceeds the NATS max_payload")
        with mapped("send failed"):
            await nc.publish(subject, data, reply=reply, headers=headers)


async def _until_lost(updates: AsyncIterator[T], lost: asyncio.Future[None]) -> AsyncIterator[T]:
    """`updates` until they end, or BusUnavailable once their connection is closed for good
    (nats-py never ends the iteration of a subscription on a closed connection)."""
    while True:
        step: asyncio.Future[T] = asyncio.ensure_future(anext(updates))
        waited: set[asyncio.Future[Any]] = {step, lost}
        try:
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not step.done():
                step.cancel()
        if not step.done() or step.cancelled():
            raise BusUnavailable("the NATS connection was closed for good")
        try:
            update = step.result()
        except StopAsyncIteration:
            return
        yield update


async def _close_quietly(nc: NatsClient) -> None:
    with contextlib.suppress(*NATS_ERRORS):
        await nc.close()


def admission_bucket(prefix: str) -> str:
    """Name of the key-value bucket holding the per-user connection tables."""
    return f"{prefix}_admission"
