"""Client: one WebSocket to a gateway, kept alive across disconnects.

After a disconnect the client reconnects with exponential back-off and
jitter, authenticates again, re-subscribes every channel with `since` set to
the last `seq` it delivered, and re-sends publishes that were not yet
acknowledged with the same `id` (the gateway de-duplicates them), so a
caller sees every message once, in order, and every `publish` that returned
was stored exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any

import aiohttp

from neurelay.backoff import Backoff
from neurelay.errors import ConnectionLost, RequestTimeout, ServerError
from neurelay.protocol.codecs import CODECS, JSON_SUBPROTOCOL, Codec

TokenSource = str | Callable[[], str | Awaitable[str]]
# Close codes after which reconnecting cannot help without the caller doing something.
_FINAL_ERRORS = frozenset({"auth_failed"})
_SUBSCRIPTION_ENDING_ERRORS = frozenset({"forbidden", "invalid_channel"})
log = logging.getLogger("neurelay.client")


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    channel: str
    payload: Any
    seq: int
    id: str | int | None
    timestamp: int


@dataclasses.dataclass(frozen=True, slots=True)
class Published:
    channel: str
    seq: int
    duplicate: bool


class Subscription:
    """Messages of one channel, in order, each once; iterate with `async for`."""

    def __init__(self, channel: str, since: int | None, last: int | None) -> None:
        self.channel = channel
        self.last_seq = since or 0
        self.recovered = True
        # Messages the gateway sent again (e.g. around a reconnect) that were dropped by seq.
        self.duplicates = 0
        self._since = since
        self._last = last
        self._acknowledged = False
        # The channel's seq when the gateway confirmed the subscription: history, if asked
        # for, ends there, and a plain subscription continues from there.
        self._position = 0
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue()

    def _request(self) -> dict[str, Any]:
        """The subscribe frame for now: the first one, or a resume after a reconnect."""
        frame: dict[str, Any] = {"type": "subscribe", "channel": self.channel}
        wants_history = self._since is not None or self._last is not None
        if self._acknowledged and not (wants_history and self.last_seq < self._position):
            frame["since"] = max(self.last_seq, self._position)
        elif self._since is not None or self.last_seq:
            frame["since"] = max(self._since or 0, self.last_seq)
        elif self._last is not None:
            frame["last"] = self._last
        return frame

    def _acknowledge(self, reply: dict[str, Any]) -> None:
        self.recovered = bool(reply.get("recovered", True))
        self._position = max(self._position, int(reply.get("seq", 0)))
        self._acknowledged = True

    def _offer(self, message: Message) -> None:
        if message.seq:
            if message.seq <= self.last_seq:
                self.duplicates += 1
                return
            self.last_seq = message.seq
        self._queue.put_nowait(message)

    def _end(self) -> None:
        self._queue.put_nowait(None)

    async def get(self, timeout: float | None = None) -> Message:
        item = await asyncio.wait_for(self._queue.get(), timeout)
        if item is None:
            self._queue.put_nowait(None)
            raise ConnectionLost("subscription ended")
        return item

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.get()
        except ConnectionLost:
            raise StopAsyncIteration from None


class Client:
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
    ) -> None:
        self.url = url
        self._token = token
        self._codec: Codec = CODECS[subprotocol]
        self._reconnect = reconnect
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._request_timeout = request_timeout
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._connected = asyncio.Event()
        self._subscriptions: dict[str, Subscription] = {}
        # A request's future resolves to its reply, or to None: "connection lost, send again".
        self._pending: dict[str | int, asyncio.Future[dict[str, Any] | None]] = {}
        self._ids = itertools.count(1)
        self._runner: asyncio.Task[None] | None = None
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
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for subscription in self._subscriptions.values():
            subscription._end()
        self._fail_pending(ConnectionLost("client closed"))
        if self._http is not None:
            await self._http.close()

    async def _open(self) -> None:
        assert self._http is not None
        ws = await self._http.ws_connect(
            self.url, protocols=(self._codec.subprotocol,), heartbeat=30.0, max_msg_size=0
        )
        self._ws = ws
        try:
            token = await self._token_value()
            reply = await self._exchange_direct({"type": "authenticate", "token": token})
            self.user = reply.get("user")
            for channel, subscription in list(self._subscriptions.items()):
                try:
                    await self._exchange_direct(subscription._request(), subscription=subscription)
                except ServerError as e:
                    if e.code not in _SUBSCRIPTION_ENDING_ERRORS:
                        raise
                    # The new token (or configuration) no longer allows it: end it, go on.
                    log.warning("subscription to %s ended: %s", channel, e)
                    del self._subscriptions[channel]
                    subscription._end()
        except BaseException:
            await ws.close()
            raise
        self._connected.set()

    async def _token_value(self) -> str:
        if isinstance(self._token, str):
            return self._token
        value = self._token()
        return value if isinstance(value, str) else await value

    async def _exchange_direct(
        self, frame: dict[str, Any], subscription: Subscription | None = None
    ) -> dict[str, Any]:
        """Request/reply before the reader task runs (during connect): read until the reply."""
        assert self._ws is not None
        frame_id = f"c{next(self._ids)}"
        await self._send({**frame, "id": frame_id})
        while True:
            msg = await asyncio.wait_for(self._ws.receive(), self._request_timeout)
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                raise ConnectionLost(
                    f"connection closed during set-up: {msg.extra}", self._ws.close_code
                )
            incoming = self._codec.decode(msg.data)
            if incoming.get("id") == frame_id:
                if incoming.get("type") == "error":
                    raise ServerError(
                        incoming["code"], incoming["message"], incoming.get("channel")
                    )
                if subscription is not None:
                    subscription._acknowledge(incoming)
                return dict(incoming)
            self._dispatch(incoming)

    async def _run(self) -> None:
        try:
            await self._serve()
        except Exception as e:
            log.exception("client stopped")
            self._fatal = self._fatal or ConnectionLost(f"client failed: {e}")
        finally:
            for subscription in self._subscriptions.values():
                subscription._end()
            self._fail_pending(self._fatal or ConnectionLost("connection closed"))

    async def _serve(self) -> None:
        attempt = 0
        while not self._closed:
            assert self._ws is not None
            async for msg in self._ws:
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    self._dispatch(self._codec.decode(msg.data))
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

    def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "message":
            subscription = self._subscriptions.get(frame.get("channel", ""))
            if subscription is not None:
                subscription._offer(
                    Message(
                        frame["channel"],
                        frame.get("payload"),
                        frame.get("seq", 0),
                        frame.get("id"),
                        frame.get("timestamp", 0),
                    )
                )
            return
        if kind == "error" and frame.get("code") == "token_expired" and frame.get("id") is None:
            asyncio.get_running_loop().create_task(self._reauthenticate())
        if kind == "error" and frame.get("code") == "rate_limited" and "id" not in frame:
            # Dropped unread, so no id: the gateway answers frames in order, so it is ours
            # that has waited longest.
            frame = {**frame, "id": next(iter(self._pending), None)}
        future = self._pending.pop(frame["id"], None) if frame.get("id") is not None else None
        if future is not None and not future.done():
            future.set_result(frame)
        elif kind == "error":
            log.warning("gateway error: %s: %s", frame.get("code"), frame.get("message"))

    async def _reauthenticate(self) -> None:
        with contextlib.suppress(ServerError, ConnectionLost, asyncio.TimeoutError):
            await self._request({"type": "authenticate", "token": await self._token_value()})

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

    async def _request(self, frame: dict[str, Any], *, retry: bool = False) -> dict[str, Any]:
        frame_id = frame.setdefault("id", f"c{next(self._ids)}")
        while True:
            if self._fatal is not None:
                raise self._fatal
            if self._closed:
                raise ConnectionLost("client closed")
            try:
                await asyncio.wait_for(self._connected.wait(), self._request_timeout)
            except TimeoutError:
                raise RequestTimeout(f"not connected within {self._request_timeout}s") from None
            future: asyncio.Future[dict[str, Any] | None]
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
            if reply is None:
                if retry:
                    continue
                raise ConnectionLost("connection lost before the reply")
            if reply.get("type") == "error":
                raise ServerError(reply["code"], reply["message"], reply.get("channel"))
            return reply

    # -- API ---------------------------------------------------------------------------------

    async def subscribe(
        self, channel: str, *, since: int | None = None, last: int | None = None
    ) -> Subscription:
        subscription = Subscription(channel, since, last)
        self._subscriptions[channel] = subscription
        try:
            reply = await self._request(subscription._request(), retry=True)
        except BaseException:
            self._subscriptions.pop(channel, None)
            raise
        subscription._acknowledge(reply)
        return subscription

    async def unsubscribe(self, channel: str) -> None:
        subscription = self._subscriptions.pop(channel, None)
        if subscription is not None:
            subscription._end()
            await self._request({"type": "unsubscribe", "channel": channel}, retry=True)

    async def publish(self, channel: str, payload: Any, *, id: str | None = None) -> Published:
        """Publish and wait for the acknowledgement; retried across reconnects with one id."""
        frame = {
            "type": "publish",
            "channel": channel,
            "payload": payload,
            "id": id or uuid.uuid4().hex,
        }
        reply = await self._request(frame, retry=True)
        return Published(reply["channel"], reply.get("seq", 0), bool(reply.get("duplicate")))

    async def ping(self) -> None:
        await self._request({"type": "ping"})
