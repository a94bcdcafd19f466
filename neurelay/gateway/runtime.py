"""Gateway: the state one gateway process shares between its connections.

It owns the NATS bus, the hub, the connection registry, the metrics and the
live settings, starts and stops their background work, and implements the
one publish path used by both WebSocket clients and the HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

from neurelay.backoff import Backoff
from neurelay.config import GatewayConfig
from neurelay.errors import BusError, BusUnavailable, PayloadTooLarge, ProtocolError
from neurelay.gateway.admission import ConnectionRegistry
from neurelay.gateway.bus import Bus, envelope
from neurelay.gateway.hub import Hub
from neurelay.gateway.observability import Metrics
from neurelay.gateway.settings import LiveSettings
from neurelay.protocol.channels import Channel
from neurelay.protocol.codes import ErrorCode
from neurelay.protocol.frames import FrameId

if TYPE_CHECKING:
    from neurelay.gateway.connection import Connection

# JetStream may still be electing a leader: retry soon, then settle at a modest pace.
_SETUP_BACKOFF = Backoff(initial_seconds=0.2, max_seconds=10.0)


class Gateway:
    def __init__(self, config: GatewayConfig, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("neurelay.gateway")
        self.live = LiveSettings(config)
        self.metrics = Metrics()
        self.bus = Bus(config.nats, self.log.getChild("bus"))
        self.hub = Hub(self.bus, self.live, self.metrics, self.log.getChild("hub"))
        self.registry = ConnectionRegistry(self.bus, self.live, self.log.getChild("admission"))
        self.connections: set[Connection] = set()
        self.draining = False
        self.bus.on_reconnected = self._on_reconnected
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
                # JetStream may still be electing a leader, or be briefly out of reach.
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
        await self.hub.close()
        await self.bus.close()

    @property
    def ready(self) -> bool:
        return self._nats_ready.is_set() and self.bus.connected and not self.draining

    async def publish(
        self, user: str, channel: Channel, payload: Any, message_id: FrameId | None
    ) -> tuple[int, bool]:
        """Publish for `user`; returns (seq, duplicate) or raises ProtocolError."""
        namespace = self.live.config.namespaces[channel.namespace]
        body = envelope(payload, message_id, int(time.time() * 1000), user)
        try:
            seq, duplicate = await self.bus.publish(
                channel, body, _message_key(user, message_id), namespace.keeps_history
            )
        except BusError as e:
            raise refusal(e, "not published", channel) from e
        self.metrics.messages_in.labels(channel.namespace).inc()
        return seq, duplicate


def refusal(error: BusError, what: str, channel: Channel) -> ProtocolError:
    """The protocol error a client gets for a failure underneath."""
    if isinstance(error, PayloadTooLarge):
        code = ErrorCode.MESSAGE_TOO_LARGE
    elif isinstance(error, BusUnavailable):
        code = ErrorCode.UNAVAILABLE
    else:
        code = ErrorCode.INTERNAL
    return ProtocolError(code, f"{what}: {error}", channel=channel.name)


def _message_key(user: str, message_id: FrameId | None) -> str | None:
    """JetStream de-duplication id: a publisher's ids are unique per user, not globally."""
    if message_id is None:
        return None
    raw = f"{len(user)}:{user}:{type(message_id).__name__}:{message_id}"
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()
