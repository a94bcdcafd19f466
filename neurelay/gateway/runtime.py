"""Gateway: the state one gateway process shares between its connections.

It owns the NATS bus, the hub, the connection registry, the presence
tracker, the metrics and the live settings, and starts and stops their
background work. It is the one boundary between the transports (the
WebSocket pump in `connection`, the HTTP API in `http_api`, the console) and
the core: transports call its methods only, never the bus, hub or registry
behind it, and its methods raise only `ProtocolError`. A `BusError` from
underneath becomes a protocol error here, in `_refusal`, and nowhere else.
It is longer than most modules on purpose: every door a transport may use is
here, each a few lines delegating to the module that does the work, so that
"what can a transport do" is answered by reading one class.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from neurelay import auth
from neurelay.backoff import Backoff
from neurelay.config import GatewayConfig
from neurelay.errors import BusError, BusUnavailable, PayloadTooLarge, ProtocolError
from neurelay.gateway import envelopes
from neurelay.gateway.admission import ConnectionRegistry
from neurelay.gateway.budget import Budget
from neurelay.gateway.bus import Bus
from neurelay.gateway.hub import Hub
from neurelay.gateway.lingering import Lingering
from neurelay.gateway.listening import Doorman
from neurelay.gateway.observability import Metrics
from neurelay.gateway.outbox import Outbox
from neurelay.gateway.permissions import (
    authorize_presence,
    authorize_publish,
    authorize_subscribe,
    require_presence,
)
from neurelay.gateway.presence import Listing
from neurelay.gateway.session import Action, Session
from neurelay.gateway.settings import LiveSettings
from neurelay.gateway.throttling import RequestThrottle
from neurelay.gateway.tracking import Tracker
from neurelay.jetstream.publishing import Ack
from neurelay.protocol import frames
from neurelay.protocol.channels import Channel
from neurelay.protocol.codes import CloseCode, ErrorCode
from neurelay.protocol.frames import FrameId


class Client(Protocol):
    """A connected client as the gateway sees it: its session, something it can close or
    tell to carry out actions (what the server API asks of it)."""

    session: Session

    async def close(self, code: CloseCode, reason: str) -> None: ...

    async def act(self, actions: list[Action]) -> None: ...


class Publication(Protocol):
    """A publish in flight, told once whether JetStream stored it."""

    channel: Channel
    message_id: FrameId | None

    def published(self, seq: int, duplicate: bool) -> None: ...

    def refused(self, error: ProtocolError) -> None: ...


class _Outcomes:
    """Turns the bus's acks into what a `Publication` is told, counting the stored ones."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._counters: dict[str, Any] = {}

    def settle(self, key: Any, outcome: Ack | BusError) -> None:
        answer: Publication = key
        channel = answer.channel
        if isinstance(outcome, BusError):
            answer.refused(_refusal(outcome, "not published", channel, answer.message_id))
            return
        counter = self._counters.get(channel.namespace)
        if counter is None:
            counter = self._metrics.messages_in.labels(channel.namespace)
            self._counters[channel.namespace] = counter
        counter.inc()
        answer.published(*outcome)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """What one history read found: `message` frames, and the resume verdict."""

    messages: list[dict[str, Any]]
    recovered: bool
    last_seq: int


# How long an HTTP publish may wait for room in the gateway's budget before 503.
HTTP_PUBLISH_WAIT_SECONDS = 5.0
# What an HTTP publish is charged on top of its body: its messages in flight at once.
HTTP_PUBLISH_CHARGE_BYTES = 64 * 1024

# JetStream may still be electing a leader: retry soon, then settle at a modest pace.
_SETUP_BACKOFF = Backoff(initial_seconds=0.2, max_seconds=10.0)


class Gateway:
    def __init__(self, config: GatewayConfig, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("neurelay.gateway")
        self.live = LiveSettings(config)
        self.metrics = Metrics()
        self.doorman = Doorman(
            config.server,
            config.nats.request_timeout_seconds,
            self.metrics,
            self.log.getChild("listening"),
        )
        self.bus = Bus(config.nats, self.log.getChild("bus"))
        self.hub = Hub(self.bus, self.live, self.metrics, self.log.getChild("hub"))
        self.registry = ConnectionRegistry(self.bus, self.live, self.log.getChild("admission"))
        self.connections: set[Client] = set()
        self.lingering = Lingering()
        self._requests = RequestThrottle()
        self._publishes = RequestThrottle()
        self._http_publishes = Budget()
        self._outcomes = _Outcomes(self.metrics)
        self.replica = self.registry.replica
        self.tracker = Tracker(
            self.bus,
            self.hub,
            self.live,
            self.replica,
            lambda: self.connections,
            self.log.getChild("presence"),
        )
        self.draining = False
        self.bus.on_reconnected = self._on_reconnected
        self.metrics.streams_refused.set_function(lambda: len(self.bus.stream_problems))
        self._tasks: list[asyncio.Task[None]] = []
        self._nats_ready = asyncio.Event()

    async def start(self) -> None:
        """Start connecting to NATS in the background; the listener may serve meanwhile."""
        self._tasks.append(asyncio.create_task(self._connect(), name="neurelay-nats-connect"))

    async def wait_until_connected(self, timeout: float | None) -> None:
        await asyncio.wait_for(self._nats_ready.wait(), timeout)

    async def _connect(self) -> None:
        await self.bus.connect()
        self._tasks.append(
            asyncio.create_task(self.registry.renew_forever(), name="neurelay-lease-renewal")
        )
        attempt = 0
        while True:
            try:
                await self._prepare_nats()
            except BusError as e:
                # JetStream may still be electing a leader, or be briefly out of reach (streams
                # it refuses are not raised: they are reported by readiness, never retried).
                delay = _SETUP_BACKOFF.delay(attempt)
                attempt += 1
                self.log.warning("JetStream set-up failed, retrying in %.1fs: %s", delay, e)
                await asyncio.sleep(delay)
            else:
                self._nats_ready.set()
                return

    async def _prepare_nats(self) -> None:
        config = self.live.config
        if config.nats.manage_streams:
            await self.bus.ensure_streams(config.namespaces)
        await self.bus.lease_bucket()
        await self.tracker.coordinator.start()

    async def _on_reconnected(self) -> None:
        self.metrics.nats_reconnects.inc()
        try:
            await self._prepare_nats()
        except BusError as e:
            self.log.warning("after reconnecting, stream set-up failed: %s", e)
        await self.hub.repair_all()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self.lingering.close()
        await self.tracker.stop()
        await self.hub.close()
        await self.bus.close()

    @property
    def ready(self) -> bool:
        return self._nats_ready.is_set() and self.bus.connected and not self.draining

    async def readiness(self) -> str:
        """'ready', or why this gateway should get no new clients now."""
        if self.draining:
            return "draining"
        if self.bus.stream_problems:
            return "streams not set up: " + "; ".join(self.bus.stream_problems.values())
        if not self.ready:
            return "nats not connected"
        try:
            await self.bus.ping()
        except BusError as e:
            return f"jetstream unreachable: {e}"
        return "ready"

    async def close_connections(self, code: CloseCode, reason: str) -> None:
        await asyncio.gather(*(c.close(code, reason) for c in list(self.connections)))

    # -- clients -----------------------------------------------------------------------------

    def verify(self, token: str) -> auth.Principal:
        """The principal a token stands for; ProtocolError when it does not verify or is revoked."""
        return self.live.verify(token)

    def verify_request(self, token: str) -> auth.Principal:
        """The principal of an HTTP API request's token, within its user's request rate."""
        principal = self.verify(token)
        limits = self.live.config.limits
        rate = limits.http_requests_per_second
        burst = limits.http_burst or max(1.0, rate)
        if not self._requests.allow(principal.user, time.monotonic(), rate, burst):
            raise ProtocolError(
                ErrorCode.RATE_LIMITED, f"more than {rate:g} HTTP API requests per second"
            )
        return principal

    def spend_publishes(self, principal: auth.Principal, count: int) -> None:
        """Count `count` messages published over HTTP against `principal`'s message rate."""
        limits = self.live.config.limits
        rate = limits.http_publish_messages_per_second
        burst = limits.http_publish_burst_messages
        if not self._publishes.allow(principal.user, time.monotonic(), rate, burst, count):
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"more than {rate:g} messages per second published through the HTTP API "
                f"(at most {burst} at once)",
            )

    @contextlib.asynccontextmanager
    async def http_publishing(self, body_bytes: int) -> AsyncIterator[None]:
        """Hold room in the gateway's budget for an HTTP publish of `body_bytes` meanwhile;
        ProtocolError(unavailable) when none comes in time, or too many wait already."""
        budget = self._http_publishes
        taken = await budget.take(
            body_bytes + HTTP_PUBLISH_CHARGE_BYTES,
            self.live.config.limits.http_publish_bytes_in_flight,
            HTTP_PUBLISH_WAIT_SECONDS,
        )
        if taken is None:
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                "the gateway is busy with other HTTP publishes; retry shortly",
            )
        try:
            yield
        finally:
            budget.give(taken)

    def new_connection_id(self) -> str:
        """An id no other connection of any replica has."""
        return self.registry.new_connection_id()

    async def admit(self, user: str, connection_id: str) -> bool:
        """Count a connection against `user`'s limit; False when the user is at the limit."""
        return await self.registry.acquire(user, connection_id)

    async def release(self, user: str, connection_id: str) -> None:
        await self.registry.release(user, connection_id)

    # -- channels ----------------------------------------------------------------------------

    async def follow(
        self,
        outbox: Outbox,
        channel: Channel,
        since: int | None,
        last: int | None,
        frame_id: FrameId | None,
        connection: str = "",
    ) -> None:
        """Queue `subscribed`, the history asked for, then live messages into `outbox`."""
        try:
            await self.hub.follow(outbox, channel, since, last, frame_id, connection)
        except BusError as e:
            raise _refusal(e, "not subscribed", channel, frame_id) from e

    async def joined(self, channel: Channel, connection: str, principal: auth.Principal) -> None:
        """Enter a followed channel's presence (and announce it where join/leave is on)."""
        await self.tracker.subscribed(channel, self.tracker.member(connection, principal))

    async def unfollow(self, outbox: Outbox, channel: Channel, connection: str = "") -> None:
        await self.hub.unfollow(outbox, channel)
        await self.tracker.unsubscribed(channel, connection)

    async def drop(self, outbox: Outbox, channels: list[Channel], connection: str = "") -> None:
        """Forget a closed connection's subscriptions and presence."""
        await self.hub.drop(outbox, channels)
        await self.tracker.disconnected(connection)

    async def publish(
        self,
        user: str,
        channel: Channel,
        payload: Any,
        message_id: FrameId | None,
        answer: Publication,
    ) -> None:
        """Publish for `user` now, in call order, without waiting for JetStream's ack:
        `answer` is told the outcome once, when the ack (or the refusal) comes."""
        namespace = self.live.config.namespaces[channel.namespace]
        body = envelopes.encode(payload, message_id, int(time.time() * 1000), user)
        try:
            await self.bus.publish(
                channel,
                body,
                envelopes.dedup_key(user, channel, message_id),
                namespace.keeps_history,
                self._outcomes,
                answer,
            )
        except BusError as e:
            answer.refused(_refusal(e, "not published", channel, message_id))

    async def publish_request(
        self, principal: auth.Principal, frame: frames.Publish, size: int, answer: Publication
    ) -> None:
        """Authorize and publish a request that did not come through a `Session`."""
        authorize_publish(self.live, principal, frame.channel, size)
        await self.publish(principal.user, frame.channel, frame.payload, frame.id, answer)

    def history_depth(self, principal: auth.Principal, channel: Channel) -> int:
        """Authorize reading `channel`'s history; the most messages one read returns."""
        authorize_subscribe(self.live, principal, channel)
        return max(self.live.config.namespaces[channel.namespace].history_messages, 1)

    async def history(self, channel: Channel, since: int, limit: int) -> HistoryPage:
        """At most `limit` retained messages after `since` (authorize first)."""
        if not self.live.config.namespaces[channel.namespace].keeps_history:
            return HistoryPage([], recovered=False, last_seq=0)
        try:
            found = await self.bus.history(
                channel, since, None, limit, self.live.config.limits.replay_budget
            )
        except BusError as e:
            raise _refusal(e, "history unavailable", channel, None) from e
        messages = (envelopes.message_frame(channel, m.seq, m.data) for m in found.messages)
        return HistoryPage([m for m in messages if m is not None], found.recovered, found.last_seq)

    # -- presence and the server API ----------------------------------------------------------

    async def presence(self, channel: Channel, binary: bool) -> Listing:
        """Who is in `channel` across replicas, encoded for `binary` or JSON (authorize first)."""
        try:
            return await self.tracker.presence(channel, binary)
        except BusError as e:
            raise _refusal(e, "presence unavailable", channel, None) from e

    async def presence_stats(self, channel: Channel) -> tuple[int, int]:
        """(users, connections) in `channel` across replicas (authorize first)."""
        try:
            return await self.tracker.stats(channel)
        except BusError as e:
            raise _refusal(e, "presence unavailable", channel, None) from e

    def authorize_server_api(self, principal: auth.Principal) -> None:
        """Raise ProtocolError(forbidden) unless the token carries `admin: true`."""
        if not principal.admin:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, "the server API needs a token with the claim admin: true"
            )

    def authorize_presence(self, principal: auth.Principal, channel: Channel) -> None:
        """Raise ProtocolError unless `principal` may see who is in `channel`.

        Admins may look at any channel; everyone only where the namespace has presence on.
        """
        if principal.admin:
            require_presence(self.live, channel)
        else:
            authorize_presence(self.live, principal, channel)

    async def channels(self, namespace: str | None) -> list[dict[str, Any]]:
        """Channels with subscribers on any replica, with their subscriber counts."""
        try:
            return await self.tracker.channels(namespace)
        except BusError as e:
            raise _refusal(e, "channels unavailable", None, None) from e

    async def disconnect_user(self, user: str) -> int:
        """Close every connection of `user` on every replica (4008); returns how many."""
        try:
            return await self.tracker.disconnect(user)
        except BusError as e:
            raise _refusal(e, "not disconnected", None, None) from e

    async def revoke_user(self, user: str, issued_before_ms: int) -> int:
        """Refuse `user`'s tokens issued before the time, everywhere; close those open (4009)."""
        try:
            return await self.tracker.revoke(user, issued_before_ms)
        except BusError as e:
            raise _refusal(e, "not revoked", None, None) from e

    async def unsubscribe_user(self, user: str, channel: Channel) -> int:
        """End `user`'s subscriptions to `channel` on every replica; returns how many."""
        try:
            return await self.tracker.unsubscribe(user, channel)
        except BusError as e:
            raise _refusal(e, "not unsubscribed", channel, None) from e


def _refusal(
    error: BusError, what: str, channel: Channel | None, frame_id: FrameId | None
) -> ProtocolError:
    """The protocol error a client gets for a failure underneath: the one mapping."""
    if isinstance(error, PayloadTooLarge):
        code = ErrorCode.MESSAGE_TOO_LARGE
    elif isinstance(error, BusUnavailable):
        code = ErrorCode.UNAVAILABLE
    else:
        code = ErrorCode.INTERNAL
    return ProtocolError(
        code,
        f"{what}: {error}",
        frame_id=frame_id,
        channel=None if channel is None else channel.name,
    )
