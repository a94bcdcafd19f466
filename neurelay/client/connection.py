"""Client: one WebSocket to a gateway, kept alive across disconnects.

After a disconnect the client reconnects with exponential back-off and
jitter, authenticates again, re-subscribes every channel with `since` set to
the last `seq` it delivered, and re-sends publishes that were not yet
acknowledged with the same `id` (the gateway de-duplicates them), so a
caller sees every message once, in order, and every `publish` that returned
was stored exactly once. With a `+batch` subprotocol one frame from the
gateway may carry several; they are handled one by one, in order.
It is longer than most modules because `Client` is one object with one
reader task and one reconnect loop whose states (connecting, authenticating,
resubscribing, sending) share the pending replies; the rules it applies live
in the sans-I/O `cursor` and `neurelay.protocol`, and only the pumping is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

import aiohttp

from neurelay.backoff import Backoff
from neurelay.client.cursor import Cursor
from neurelay.client.subscription import Following, Subscription
from neurelay.errors import (
    ClientError,
    ConnectionLost,
    IdInFlight,
    ProtocolError,
    RequestTimeout,
    ServerError,
)
from neurelay.protocol import frames
from neurelay.protocol.codecs import CODECS, JSON_SUBPROTOCOL, Codec
from neurelay.protocol.codes import ErrorCode
from neurelay.protocol.frames import FrameId
from neurelay.protocol.server_frames import (
    Authenticated,
    Error,
    Join,
    Leave,
    Message,
    Pong,
    Presence,
    PresenceStats,
    Published,
    ServerFrame,
    Subscribed,
    Unsubscribed,
    parse_server_frame,
)

TokenSource = str | Callable[[], str | Awaitable[str]]
Reply = TypeVar(
    "Reply", Authenticated, Subscribed, Unsubscribed, Published, Pong, Presence, PresenceStats
)
# Errors after which reconnecting cannot help without the caller doing something.
_FINAL_ERRORS = frozenset({ErrorCode.AUTH_FAILED})
# Errors that end one subscription when re-subscribing after a reconnect.
_SUBSCRIPTION_ENDING_ERRORS = frozenset({ErrorCode.FORBIDDEN, ErrorCode.INVALID_CHANNEL})
log = logging.getLogger("neurelay.client")


class Client:
    """One WebSocket to a gateway, kept alive across disconnects (see the module docstring).

    `backoff_initial` and `backoff_max` (seconds) bound the delay between reconnect
    attempts; `request_timeout` (seconds) bounds the wait for a connection and a reply.
    """

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        subprotocol: str = JSON_SUBPROTOCOL,
        reconnect: bool = True,
        backoff_initial: float = 0.1,
        backoff_max: float = 10.0,
        request_timeout: float = 30.0,
        on_join_leave: Callable[[Join | Leave], None] | None = None,
    ) -> None:
        self.url = url
        # Called with every `join`/`leave` of the channels followed (namespaces with join/leave).
        self.on_join_leave = on_join_leave
        self._token = token
        self._codec: Codec = CODECS[subprotocol]
        self._reconnect = reconnect
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._request_timeout = request_timeout
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._connected = asyncio.Event()
        self._following: dict[str, Following] = {}
        # A request's future resolves to its reply, or to None: "connection lost, send again".
        self._pending: dict[FrameId, asyncio.Future[ServerFrame | None]] = {}
        # Frames read (several came in one batched frame) but not yet handled.
        self._unread: deque[ServerFrame] = deque()
        self._ids = itertools.count(1)
        # Ids of the requests awaiting their replies (or a connection to be sent on).
        self._in_flight: set[FrameId] = set()
        self._runner: asyncio.Task[None] | None = None
        self._reauthentication: asyncio.Task[None] | None = None
        self._closed = False
        self._fatal: BaseException | None = None
        self.reconnects = 0
        self.user: str | None = None

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the first connection; raises if it cannot be made and authenticated."""
        self._http = aiohttp.ClientSession()
        try:
            await self._open()
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            await self._http.close()
            raise ConnectionLost(f"cannot connect to {self.url}: {e}") from e
        except BaseException:
            await self._http.close()
            raise
        self._runner = asyncio.create_task(self._run(), name="neurelay-client")

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()
        for task in (self._reauthentication, self._runner):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for following in self._following.values():
            following.end()
        self._fail_pending(ConnectionLost("client closed"))
        if self._http is not None:
            await self._http.close()

    async def _open(self) -> None:
        assert self._http is not None
        ws = await self._http.ws_connect(
            self.url, protocols=(self._codec.subprotocol,), heartbeat=30.0, max_msg_size=0
        )
        self._ws = ws
        self._unread.clear()  # what a failed attempt left is of no use on this connection
        try:
            token = await self._token_value()
            reply = await self._exchange_direct(frames.authenticate(token), Authenticated)
            self.user = reply.user
            for channel, following in list(self._following.items()):
                try:
                    subscribed = await self._exchange_direct(following.cursor.request(), Subscribed)
                except ServerError as e:
                    if e.code not in _SUBSCRIPTION_ENDING_ERRORS:
                        raise
                    # The new token (or configuration) no longer allows it: end it, go on.
                    log.warning("subscription to %s ended: %s", channel, e)
                    del self._following[channel]
                    following.end()
                else:
                    following.cursor.acknowledge(subscribed)
        except BaseException:
            await ws.close()
            raise
        self._connected.set()

    async def _token_value(self) -> str:
        if isinstance(self._token, str):
            return self._token
        value = self._token()
        return value if isinstance(value, str) else await value

    def _read(self, data: bytes | str) -> list[ServerFrame]:
        """Decode and type the frames of one WebSocket frame, leaving out types this client
        skips."""
        try:
            parsed = [parse_server_frame(obj) for obj in self._codec.decode_batch(data)]
        except ProtocolError as e:
            raise ConnectionLost(f"the gateway sent a frame this client cannot read: {e}") from e
        return [frame for frame in parsed if frame is not None]

    async def _exchange_direct(self, frame: dict[str, Any], expected: type[Reply]) -> Reply:
        """Request/reply before the reader task runs (during connect): read until the reply."""
        assert self._ws is not None
        frame_id = self._free_id()
        await self._send({**frame, "id": frame_id})
        while True:
            if not self._unread:
                msg = await asyncio.wait_for(self._ws.receive(), self._request_timeout)
                if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    raise ConnectionLost(
                        f"connection closed during set-up: {msg.extra}", self._ws.close_code
                    )
                self._unread.extend(self._read(msg.data))
                continue
            # Frames behind the reply (history after `subscribed`) wait until it is handled.
            incoming = self._unread.popleft()
            if getattr(incoming, "id", None) == frame_id:
                return _reply(incoming, expected)
            self._dispatch(incoming)

    async def _run(self) -> None:
        try:
            await self._serve()
        except Exception as e:
            log.exception("client stopped")
            self._fatal = self._fatal or ConnectionLost(f"client failed: {e}")
        finally:
            for following in self._following.values():
                following.end()
            self._fail_pending(self._fatal or ConnectionLost("connection closed"))

    async def _serve(self) -> None:
        attempt = 0
        while not self._closed:
            assert self._ws is not None
            while self._unread:
                self._dispatch(self._unread.popleft())
            async for msg in self._ws:
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    for frame in self._read(msg.data):
                        self._dispatch(frame)
            self._connected.clear()
            code = self._ws.close_code
            log.info("disconnected (close code %s)", code)
            if self._closed or not self._reconnect:
                break
            self._retry_pending()
            while not self._closed:
                await asyncio.sleep(self._backoff.delay(attempt))
                attempt += 1
                try:
                    await self._open()
                except ServerError as e:
                    if e.code in _FINAL_ERRORS:
                        self._fatal = e
                        self._closed = True
                        break
                except Exception as e:  # any failure to reconnect is retried after back-off
                    log.info("reconnect failed: %s", e)
                else:
                    attempt = 0
                    self.reconnects += 1
                    break

    def _dispatch(self, frame: ServerFrame) -> None:
        if isinstance(frame, Join | Leave):
            if self.on_join_leave is not None and frame.channel in self._following:
                self.on_join_leave(frame)
            return
        if isinstance(frame, Unsubscribed) and frame.id is None:
            # A backend ended the subscription (the server API): its iterator finishes.
            following = self._following.pop(frame.channel, None)
            if following is not None:
                following.end()
            return
        if isinstance(frame, Message):
            following = self._following.get(frame.channel)
            if following is not None:
                following.deliver(frame)
            return
        if isinstance(frame, Error) and frame.id is None:
            if frame.code == ErrorCode.TOKEN_EXPIRED:
                self._start_reauthentication()
            elif frame.code == ErrorCode.RATE_LIMITED:
                # Dropped unread, so no id: the gateway answers frames in order, so it is
                # ours that has waited longest.
                frame = dataclasses.replace(frame, id=next(iter(self._pending), None))
        future = self._pending.pop(frame.id, None) if frame.id is not None else None
        if future is not None and not future.done():
            future.set_result(frame)
        elif isinstance(frame, Error):
            log.warning("gateway error: %s: %s", frame.code, frame.message)

    def _start_reauthentication(self) -> None:
        # One at a time; the reference keeps the task alive and lets close() cancel it.
        if self._reauthentication is None or self._reauthentication.done():
            self._reauthentication = asyncio.get_running_loop().create_task(
                self._reauthenticate(), name="neurelay-client-reauthenticate"
            )

    async def _reauthenticate(self) -> None:
        try:
            token = await self._token_value()
            await self._request(frames.authenticate(token), Authenticated)
        except ClientError as e:
            log.info("re-authentication failed: %s", e)
        except Exception:
            # The caller's token source failed; without a fresh token the gateway closes with
            # 4001 and the reconnect asks the source again. close() must not raise this.
            log.warning("re-authentication failed: the token source raised", exc_info=True)

    def _retry_pending(self) -> None:
        # Unanswered requests are re-sent by their callers after the reconnect.
        for future in self._pending.values():
            if not future.done():
                future.set_result(None)
        self._pending.clear()

    def _fail_pending(self, error: BaseException) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    async def _send(self, frame: dict[str, Any]) -> None:
        assert self._ws is not None
        data = self._codec.encode(frame)
        if self._codec.binary:
            await self._ws.send_bytes(data)
        else:
            await self._ws.send_str(data.decode())

    async def _request(
        self, frame: dict[str, Any], expected: type[Reply], *, retry: bool = False
    ) -> Reply:
        frame_id: FrameId | None = frame.get("id")
        if frame_id is None:
            frame_id = frame["id"] = self._free_id()
        elif frame_id in self._in_flight:
            # The reply names only the id: it could go to either request.
            raise IdInFlight(f"a request with id {frame_id!r} is still awaiting its reply")
        self._in_flight.add(frame_id)
        try:
            return await self._exchange(frame, frame_id, expected, retry)
        finally:
            self._in_flight.discard(frame_id)

    def _free_id(self) -> str:
        """A request id of the client's own, not that of a request in flight."""
        while (frame_id := f"c{next(self._ids)}") in self._in_flight:
            pass
        return frame_id

    async def _exchange(
        self, frame: dict[str, Any], frame_id: FrameId, expected: type[Reply], retry: bool
    ) -> Reply:
        while True:
            if self._fatal is not None:
                raise self._fatal
            if self._closed:
                raise ConnectionLost("client closed")
            try:
                await asyncio.wait_for(self._connected.wait(), self._request_timeout)
            except TimeoutError:
                raise RequestTimeout(f"not connected within {self._request_timeout}s") from None
            future: asyncio.Future[ServerFrame | None]
            future = asyncio.get_running_loop().create_future()
            self._pending[frame_id] = future
            try:
                await self._send(frame)
                reply = await asyncio.wait_for(future, self._request_timeout)
            except (ConnectionResetError, aiohttp.ClientError):
                reply = None
            except TimeoutError:
                raise RequestTimeout(f"no reply within {self._request_timeout}s") from None
            finally:
                self._pending.pop(frame_id, None)
            if reply is not None:
                return _reply(reply, expected)
            if not retry:
                raise ConnectionLost("connection lost before the reply")

    # -- API ---------------------------------------------------------------------------------

    async def subscribe(
        self, channel: str, *, since: int | None = None, last: int | None = None
    ) -> Subscription:
        """Follow a channel: from now, from after `since`, or from its `last` N messages."""
        following = Following(Cursor(channel, since, last))
        self._following[channel] = following
        try:
            reply = await self._request(following.cursor.request(), Subscribed, retry=True)
        except BaseException:
            self._following.pop(channel, None)
            raise
        following.cursor.acknowledge(reply)
        return Subscription(following)

    async def unsubscribe(self, channel: str) -> None:
        following = self._following.pop(channel, None)
        if following is not None:
            following.end()
            await self._request(frames.unsubscribe(channel), Unsubscribed, retry=True)

    async def publish(self, channel: str, payload: Any, *, id: str | None = None) -> Published:
        """Publish and wait for the acknowledgement; retried across reconnects with one id.

        Raises `IdInFlight` while another request with the same `id` awaits its reply.
        """
        frame = frames.publish(channel, payload, id or uuid.uuid4().hex)
        return await self._request(frame, Published, retry=True)

    async def ping(self) -> None:
        await self._request(frames.ping(), Pong)

    async def presence(self, channel: str) -> Presence:
        """Who is subscribed to `channel` on every replica (namespaces with presence on)."""
        return await self._request(frames.ask_presence(channel), Presence, retry=True)

    async def presence_stats(self, channel: str) -> PresenceStats:
        """How many users and connections are subscribed to `channel`."""
        return await self._request(
            frames.ask_presence(channel, stats=True), PresenceStats, retry=True
        )


def _reply(frame: ServerFrame, expected: type[Reply]) -> Reply:
    """The reply as the type the request expects; an `error` frame raises `ServerError`."""
    if isinstance(frame, Error):
        raise ServerError(frame.code, frame.message, frame.channel)
    if not isinstance(frame, expected):
        raise ConnectionLost(f"the gateway answered with {frame!r}, not {expected.__name__}")
    return frame
