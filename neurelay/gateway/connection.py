"""Connection: the aiohttp pump around one client's Session.

It checks the upgrade (origin, optional token, connection limit), then reads
frames into the Session and carries out the actions it returns: frames go to
the outbox, admissions, subscriptions and publishes to the `Gateway`. Deadlines
(authentication timeout, token expiry) come from the loop's shared `Deadlines`
as calls of `on_deadline`, into the Session.
No protocol rule lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiohttp import WSMsgType, web

from neurelay.errors import ProtocolError
from neurelay.gateway.deadlines import DEAD, PING, Heartbeat, deadlines
from neurelay.gateway.masking import WebSocketResponse
from neurelay.gateway.outbox import Outbox
from neurelay.gateway.replying import MAX_HELD, Replies
from neurelay.gateway.runtime import Gateway
from neurelay.gateway.session import (
    Action,
    Admit,
    Close,
    PublishMessage,
    QueryPresence,
    Send,
    Session,
    StartSubscription,
    StopSubscription,
)
from neurelay.gateway.trimming import trim
from neurelay.gateway.web import GATEWAY_KEY, bearer_token, error_response, origin_allowed
from neurelay.protocol import frames
from neurelay.protocol.codecs import CODECS, JSON
from neurelay.protocol.codes import CloseCode, ErrorCode

# An empty ping, as a server sends it (unmasked); written whole, so never inside another frame.
_PING_FRAME = b"\x89\x00"
# What `ws.receive()` returns once the connection is over.
_ENDED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)
# From the overflow, a slow consumer may read this long to reach the close frame, then is cut.
SLOW_CONSUMER_GRACE_SECONDS = 30.0
# How long a slow consumer's close handshake may take before its socket closes without it.
SLOW_CONSUMER_REPLY_SECONDS = 1.0
# aiohttp refuses (and closes with 1009) frames above this; ours below answer message_too_large.
_TRANSPORT_SLACK = 64 * 1024


async def websocket(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY_KEY]
    config = gateway.live.config
    if not origin_allowed(request, config.allowed_origins):
        gateway.metrics.rejections.labels(ErrorCode.FORBIDDEN.value).inc()
        return error_response(ErrorCode.FORBIDDEN, "origin not allowed")
    if gateway.draining:
        return error_response(ErrorCode.UNAVAILABLE, "gateway is draining")
    if gateway.doorman.at_capacity:
        return error_response(ErrorCode.UNAVAILABLE, "gateway is at its connection capacity")
    ws = WebSocketResponse(
        protocols=tuple(CODECS),
        # Pings both ways are ours (Connection.on_deadline, the receive loop): aiohttp's
        # heartbeat would cost every connection timer handles of its own.
        heartbeat=None,
        autoping=False,
        max_msg_size=config.limits.max_message_bytes * 2 + _TRANSPORT_SLACK,
        # No permessage-deflate: a message is encoded once and the same bytes go to every
        # subscriber; per-connection compression would redo the work for each of them.
        compress=False,
    )
    ready = ws.can_prepare(request)
    if not ready.ok:
        return error_response(ErrorCode.BAD_REQUEST, "expected a WebSocket upgrade")
    codec = CODECS.get(ready.protocol or "", JSON)
    connection = Connection(gateway, codec, ws, request)
    # The rest is here, not in a method: this handler's frame lasts as long as the connection,
    # and a second frame would cost every idle connection some hundred bytes.
    token = bearer_token(request)
    admit: Admit | None = None
    if token is not None:
        try:
            admit = connection.session.authenticate_at_upgrade(token)
        except ProtocolError as e:
            gateway.metrics.rejections.labels(e.code.value).inc()
            return error_response(e.code, e.message)
        if not await connection.acquire(admit):
            code = ErrorCode.TOO_MANY_CONNECTIONS
            gateway.metrics.rejections.labels(code.value).inc()
            return error_response(code, "user holds too many connections")
    token = None  # a copy of the JWT: not to be held as long as this frame
    try:
        await ws.prepare(request)
    except BaseException as e:
        # The client went away during the upgrade: its admission must not linger.
        if connection.admitted_user is not None:
            await gateway.release(connection.admitted_user, connection.id)
        if isinstance(e, ConnectionResetError):
            gateway.metrics.upgrades_abandoned.inc()
            return web.Response(status=400)  # nobody is left to read it
        raise
    trim(request, ws)
    transport = request.transport
    connection.outbox.start(ws)
    if not ws.compress and transport is not None:
        connection.outbox.write_directly(ws, transport)
    gateway.connections.add(connection)
    gateway.metrics.connections.inc()
    try:
        if admit is not None:
            actions, admit = connection.session.admitted(admit.principal, True, None), None
            await connection.execute(actions)
        connection.schedule()
        while True:  # not `async for`: its iterator frame would cost each connection
            message = await ws.receive()
            now = time.time()
            connection.heartbeat.heard(now)
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await connection.execute(connection.session.receive(message.data, now))
                connection.schedule()
            elif message.type is WSMsgType.PING:
                await ws.pong(message.data)
            elif message.type in _ENDED:
                break
    except Exception:
        # A fault of ours ends this connection only, never the gateway.
        connection.log.exception("connection failed", extra={"connection": connection.id})
        await connection.close(CloseCode.INTERNAL_ERROR, "internal error")
    finally:
        await connection.cleanup()
    return ws


class Connection:
    # Slots: every idle connection holds one; a __dict__ would cost it a few hundred bytes.
    __slots__ = (
        "_closing",
        "_deadlines",
        "_replies",
        "admitted_user",
        "gateway",
        "heartbeat",
        "id",
        "log",
        "outbox",
        "request",
        "session",
        "ws",
    )

    def __init__(
        self, gateway: Gateway, codec: Any, ws: web.WebSocketResponse, request: web.Request
    ) -> None:
        self.gateway = gateway
        self.id = gateway.new_connection_id()
        self.ws = ws
        self.request = request
        self.session = Session(self.id, codec, gateway.live, time.time())
        self.outbox = Outbox(codec, gateway.live, self._on_overflow)
        self.log = gateway.log.getChild("connection")
        self.admitted_user: str | None = None
        self._deadlines = deadlines()
        self.heartbeat = Heartbeat(gateway.live.config.limits.heartbeat_seconds, time.time())
        self._closing: asyncio.Task[None] | None = None
        self._replies: Replies | None = None

    async def cleanup(self) -> None:
        gateway = self.gateway
        self._deadlines.cancel(self)
        gateway.connections.discard(self)
        gateway.metrics.connections.dec()
        if self._closing is not None and self._closing is not asyncio.current_task():
            await asyncio.wait({self._closing})
        failure = await self.outbox.stop()
        if failure is not None:
            # The socket broke under the writer; the rest of the clean-up must still run.
            self.log.debug("writer ended: %r", failure, extra={"connection": self.id})
        await gateway.drop(self.outbox, list(self.session.subscriptions.values()), self.id)
        if self.admitted_user is not None:
            await gateway.release(self.admitted_user, self.id)

    async def acquire(self, admit: Admit) -> bool:
        granted = await self.gateway.admit(admit.principal.user, self.id)
        if granted:
            self.admitted_user = admit.principal.user
        return granted

    # -- actions -----------------------------------------------------------------------------

    async def execute(self, actions: list[Action]) -> None:
        for action in actions:
            replies = self._replies
            if replies is not None and replies.held >= MAX_HELD:
                # Its frames stay unread until acks come: a client cannot pile up publishes,
                # or refusals behind them, faster than JetStream answers.
                await replies.below(MAX_HELD)
            if isinstance(action, PublishMessage):
                await self._publish(action)
                continue
            if isinstance(action, Send):
                self._reply(action.frame)
                continue
            # What follows must not overtake the publishes before it: their replies go first.
            if replies is not None and replies.held:
                await replies.below(1)
            if isinstance(action, Close):
                await self.close(action.code, action.reason)
                return
            if isinstance(action, Admit):
                granted = await self.acquire(action)
                await self.execute(
                    self.session.admitted(action.principal, granted, action.frame_id)
                )
            elif isinstance(action, StartSubscription):
                await self._subscribe(action)
            elif isinstance(action, StopSubscription):
                await self.gateway.unfollow(self.outbox, action.channel, self.id)
                if action.reply:
                    self._send(frames.unsubscribed(action.channel.name, action.frame_id))
            else:
                await self._presence(action)

    async def act(self, actions: list[Action]) -> None:
        """Carry out what the server API asked of this connection (from another task)."""
        for action in actions:
            if isinstance(action, Close):
                self._close_soon(action.code, action.reason)
                return
        await self.execute(actions)

    def _send(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "error":
            self.gateway.metrics.rejections.labels(frame["code"]).inc()
            # A flood of rate-limited frames must not become a flood of log lines.
            level = logging.DEBUG if frame["code"] == "rate_limited" else logging.INFO
            self.log.log(
                level,
                "refused: %s",
                frame["message"],
                extra={"connection": self.id, "frame_id": frame.get("id"), "code": frame["code"]},
            )
        self.outbox.send(frame)

    async def _subscribe(self, action: StartSubscription) -> None:
        try:
            await self.gateway.follow(
                self.outbox, action.channel, action.since, action.last, action.frame_id, self.id
            )
        except ProtocolError as e:
            self.session.subscription_failed(action.channel)
            self._send(frames.error_from(e))
            return
        principal = self.session.principal
        if principal is not None and action.channel.name in self.session.subscriptions:
            await self.gateway.joined(action.channel, self.id, principal)

    async def _presence(self, action: QueryPresence) -> None:
        channel = action.channel
        try:
            if action.stats:
                users, connections = await self.gateway.presence_stats(channel)
                frame = frames.presence_stats(channel.name, users, connections, action.frame_id)
            else:
                codec = self.outbox.codec
                listing = await self.gateway.presence(channel, codec.binary)
                frame = frames.presence(channel.name, [], listing.truncated, action.frame_id)
                # The entries come encoded from the replicas and are not decoded here.
                self.outbox.push(codec.encode_with_list(frame, "clients", listing.entries))
                return
        except ProtocolError as e:
            e.frame_id = action.frame_id
            frame = frames.error_from(e)
        self._send(frame)

    def _reply(self, frame: dict[str, Any]) -> None:
        """Send a reply behind the replies of the publishes still in flight."""
        if self._replies is None:
            self._send(frame)
        else:
            self._replies.send(frame)

    async def _publish(self, action: PublishMessage) -> None:
        principal = self.session.principal
        assert principal is not None  # the session only publishes for an authenticated user
        replies = self._replies
        if replies is None:
            # Made at the first publish: a connection that only listens never holds one.
            replies = self._replies = Replies(self._send)
        channel = action.channel
        await self.gateway.publish(
            principal.user,
            channel,
            action.payload,
            action.frame_id,
            replies.expect(channel, action.frame_id),
        )

    # -- deadlines and closing ---------------------------------------------------------------

    def schedule(self) -> None:
        deadline, beat = self.session.next_deadline(), self.heartbeat.due
        self._deadlines.set(self, beat if deadline is None else min(deadline, beat))

    def on_deadline(self) -> None:
        now = time.time()
        beat = self.heartbeat.tick(now)
        transport = self.request.transport
        if beat == DEAD:
            # Like aiohttp's heartbeat: no close handshake with a client that does not answer.
            self.log.debug("no pong in time", extra={"connection": self.id})
            if transport is not None:
                transport.abort()
            return
        if (
            beat == PING
            and transport is not None
            and not transport.is_closing()
            and not self.ws.closed  # nothing may follow a close frame
        ):
            transport.write(_PING_FRAME)
        actions = self.session.tick(now)
        for action in actions:
            if isinstance(action, Send):
                self._send(action.frame)
            elif isinstance(action, Close):
                self._close_soon(action.code, action.reason)
                return
        self.schedule()

    def _on_overflow(self) -> None:
        self.log.warning("slow consumer disconnected", extra={"connection": self.id})
        self.gateway.metrics.slow_consumers.inc()
        transport = self.request.transport
        if transport is not None:
            # The grace period runs from now, however long the close itself takes.
            deadline = asyncio.get_running_loop().time() + SLOW_CONSUMER_GRACE_SECONDS
            self.gateway.lingering.hold(transport, deadline)
        self._close_soon(CloseCode.SLOW_CONSUMER, "slow consumer")

    def _close_soon(self, code: CloseCode, reason: str) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self.close(code, reason))

    async def close(self, code: CloseCode, reason: str) -> None:
        """Send what is queued (unless the client is too slow for that), then close."""
        self.outbox.close()
        if code is CloseCode.SLOW_CONSUMER:
            await self._close_slow_consumer(reason)
            return
        await self.outbox.flushed(timeout=5.0)
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), timeout=5.0)
        except TimeoutError:
            transport = self.request.transport
            if transport is not None:
                transport.abort()

    async def _close_slow_consumer(self, reason: str) -> None:
        """Close a client that does not read: its queue is already dropped, so the close frame
        goes right behind what the socket holds. The gateway's `Lingering` holds the socket
        from the overflow on, until the client has read up to it or the grace period ends."""
        if self.request.transport is None:
            return
        # The writer may be stuck waiting for the full socket to drain; frames are written
        # whole before that.
        await self.outbox.stop()
        with contextlib.suppress(TimeoutError):
            # Its own close frame may never come: the transport is then closed without it.
            await asyncio.wait_for(
                self.ws.close(code=CloseCode.SLOW_CONSUMER, message=reason.encode(), drain=False),
                timeout=SLOW_CONSUMER_REPLY_SECONDS,
            )
