"""Listening: the TCP listener, and the doorman that keeps idle sockets from holding it.

A connection is pending until it has sent a complete request. The doorman
gives every pending connection `handshake_timeout_seconds` (a plain HTTP
request also the NATS request timeout, since it is answered within it) and
closes it then, so raw sockets that never send a byte, half-sent upgrades
and idle keep-alive connections cannot pile up. At most
`max_pending_connections` are pending per process: a new one beyond that
closes the oldest. WebSocket upgrades leave the doorman once their request
is in (the connection then has its own authentication deadline), and so does
an HTTP publish once its body is in (`request_read`): its wait for room in
the publish budget and for its acks have their own bounds, and cutting it
there would leave the caller without an answer.

The gateway raises its soft open-file limit to the hard one at start
(`raise_open_file_limit`); the doorman keeps `FILE_RESERVE` descriptors for
NATS, files and logs, and refuses WebSocket upgrades with 503 once only
`HTTP_HEADROOM` more connections would fit, so `/healthz`, `/readyz` and
`/metrics` keep answering when WebSockets fill the process. At the limit a
new connection closes the oldest pending one or, when none is pending, is
closed itself: the process never runs out of descriptors.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_runner import BaseRunner, BaseSite

from neurelay.config import ServerSettings
from neurelay.gateway.observability import Metrics

FILE_RESERVE = 64  # descriptors for NATS, configuration and key files, logs
HTTP_HEADROOM = 32  # connections kept for probes and scrapes when WebSockets fill the rest
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft  # e.g. an unlimited hard limit the kernel caps lower: keep the soft one
        soft = hard
    return soft


def open_file_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class Doorman:
    """Tracks the process's connections and closes the ones that do not come in."""

    def __init__(
        self,
        settings: ServerSettings,
        request_seconds: float,
        metrics: Metrics,
        logger: logging.Logger,
    ) -> None:
        self._timeout = settings.handshake_timeout_seconds
        self._request_timeout = settings.handshake_timeout_seconds + request_seconds
        self._max_pending = settings.max_pending_connections
        self._metrics = metrics
        self._log = logger
        # Insertion order is arming order: the first entry is the longest pending.
        self._pending: dict[asyncio.BaseTransport, asyncio.TimerHandle] = {}
        self.open = 0
        self.capacity = max(open_file_limit() - FILE_RESERVE, 2 * HTTP_HEADROOM)
        metrics.connections_pending.set_function(lambda: len(self._pending))

    @property
    def at_capacity(self) -> bool:
        """Whether another WebSocket would eat into the room kept for plain HTTP."""
        return self.open - len(self._pending) >= self.capacity - HTTP_HEADROOM

    def opened(self, transport: asyncio.BaseTransport) -> None:
        self.open += 1
        if self.open > self.capacity or len(self._pending) >= self._max_pending:
            reason = "file_limit" if self.open > self.capacity else "pending_limit"
            if not self._pending:
                self._cut(transport, reason)
                return
            oldest = next(iter(self._pending))
            self._pending.pop(oldest).cancel()
            self._cut(oldest, reason)
        self._arm(transport, self._timeout)

    def closed(self, transport: asyncio.BaseTransport) -> None:
        self.open -= 1
        handle = self._pending.pop(transport, None)
        if handle is not None:
            handle.cancel()

    def _arm(self, transport: asyncio.BaseTransport, delay: float) -> None:
        handle = self._pending.pop(transport, None)
        if handle is not None:
            handle.cancel()
        if not transport.is_closing():
            loop = asyncio.get_running_loop()
            self._pending[transport] = loop.call_later(delay, self._expire, transport)

    def _expire(self, transport: asyncio.BaseTransport) -> None:
        if self._pending.pop(transport, None) is not None:
            self._cut(transport, "deadline")

    def _cut(self, transport: asyncio.BaseTransport, reason: str) -> None:
        self._metrics.connections_cut.labels(reason).inc()
        self._log.debug("connection cut", extra={"reason": reason})
        transport.abort()  # type: ignore[attr-defined]

    @web.middleware
    def middleware(self, request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        """aiohttp middleware: a request is in; a WebSocket upgrade leaves the doorman.

        Not a coroutine: for an upgrade it hands aiohttp the handler's own awaitable, so no
        frame of the doorman's lives as long as the WebSocket (hundreds of bytes each).
        """
        transport = request.transport
        if transport is None:
            return handler(request)
        # Only a bodiless GET may leave: a body trickled behind an upgrade header must not.
        if _is_upgrade(request):
            handle = self._pending.pop(transport, None)
            if handle is not None:
                handle.cancel()
            return handler(request)  # a refused upgrade is armed again by `response_prepared`
        self._arm(transport, self._request_timeout)
        return self._serve(transport, request, handler)

    async def _serve(
        self, transport: asyncio.BaseTransport, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            # Kept alive, the connection has the handshake timeout to send its next request.
            self._arm(transport, self._timeout)

    def request_read(self, request: web.Request) -> None:
        """A request's body is in: from here its handler's own timeouts bound it, not ours.

        The deadline is for a request to arrive; a publish that then waits for its turn
        and its acks must not be cut without an answer.
        """
        transport = request.transport
        if transport is not None:
            handle = self._pending.pop(transport, None)
            if handle is not None:
                handle.cancel()

    async def response_prepared(self, request: web.Request, response: web.StreamResponse) -> None:
        """aiohttp `on_response_prepare` signal: a refused upgrade is a pending connection again.

        Kept alive, it has the handshake timeout to send its next request.
        """
        transport = request.transport
        if transport is not None and response.status != 101 and _is_upgrade(request):
            self._arm(transport, self._timeout)

    def protocol(self, inner: asyncio.Protocol) -> asyncio.Protocol:
        return _Watched(inner, self)


def _is_upgrade(request: web.Request) -> bool:
    return request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"


class _Watched(asyncio.Protocol):
    """Passes everything to aiohttp's protocol and tells the doorman when it opens and closes."""

    __slots__ = ("_doorman", "_inner", "_transport")

    def __init__(self, inner: asyncio.Protocol, doorman: Doorman) -> None:
        self._inner = inner
        self._doorman = doorman
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._inner.connection_made(transport)
        self._doorman.opened(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._doorman.closed(self._transport)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class GuardedSite(BaseSite):
    """aiohttp's TCP site, with every connection watched by the doorman."""

    def __init__(
        self, runner: BaseRunner, doorman: Doorman, host: str, port: int, backlog: int
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._doorman = doorman
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        doorman = self._doorman
        self._server = await asyncio.get_running_loop().create_server(
            lambda: doorman.protocol(server()),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
        )
