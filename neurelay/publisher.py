"""Publisher: backend services publish straight into JetStream, no gateway in between.

For services that emit token streams and statuses: `Publisher` connects to
the gateways' NATS and writes each message to its channel's stream subject
in the gateway's own envelope (`neurelay.gateway.envelopes`), so
subscribers cannot tell it from a message published through a gateway.
Every message carries an idempotency id (the caller's, or one the publisher
makes up) and goes out with the gateway's `Nats-Msg-Id` for it, so a retry
after a lost ack is stored once. `publish_batch` writes a whole batch
pipelined and gathers the acks; concurrent `publish` calls pipeline too.

Guarantees: a call that returns has every message stored (its `seq` is the
stream sequence subscribers see); messages of one call, and of calls
awaited one after another, are stored in the order given; a message refused
with a retryable error (NATS unreachable, stream leader being elected) is
republished with the same id until `retry_seconds` pass, then the call
raises `BusUnavailable`. Order holds across a lost connection too: the
publisher dials again itself, one attempt shared by every call waiting
(nats-py's reconnect would send buffered bytes after ones lost with the
socket), so NATS holds a prefix of what was written and the rest goes again
in order; a batch goes in windows of
`max_in_flight`, each stored completely before the next is written. The one
exception: a message JetStream refuses as unavailable (a leader election)
while later ones of its window are stored lands after them. A batch is not
atomic: on a non-retryable error the messages before it stay stored.
Only namespaces that keep history have a
stream to publish to. The publisher is trusted: no token, no per-channel
authorization (give it NATS credentials limited to `<prefix>.s.>`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import math
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import Any

import nats
from nats.aio.client import Client as NatsClient

from neurelay.backoff import Backoff
from neurelay.errors import BusError, BusUnavailable
from neurelay.gateway import envelopes
from neurelay.jetstream.errors import NATS_ERRORS, bus_error
from neurelay.jetstream.publishing import Ack, AckedPublishing
from neurelay.protocol.channels import parse_channel, stored_subject
from neurelay.protocol.frames import FrameId

__all__ = ["Published", "Publisher", "PublisherSettings"]


@dataclasses.dataclass(frozen=True, slots=True)
class PublisherSettings:
    servers: Sequence[str]
    """NATS URLs of the gateways' NATS (the gateway's `nats.servers`)."""

    user: str
    """Who publishes: the envelope's user and part of the de-duplication key, as a token's
    subject is for a gateway client (e.g. `svc:agent-runner`)."""

    subject_prefix: str = "neurelay"
    """The gateways' `nats.subject_prefix`."""

    credentials_file: str | None = None
    """NATS credentials (.creds) file, if the server asks for one."""

    ack_timeout_seconds: float = 5.0
    """How long one publish waits for JetStream's ack before it counts as failed (retried)."""

    retry_seconds: float = 30.0
    """How long retryable failures are retried before the call raises; a finite bound."""

    max_in_flight: int = 1024
    """Publishes written but not yet acked, per batch window; bounds memory and ack timeouts."""

    connect_timeout_seconds: float = 5.0
    """Time to reach a NATS server when connecting."""


@dataclasses.dataclass(frozen=True, slots=True)
class Published:
    """What a subscriber will see: the stream sequence, and the id the message carries."""

    channel: str
    seq: int
    id: FrameId
    duplicate: bool


Message = tuple[str, Any] | tuple[str, Any, FrameId | None]
# subject, body, headers, channel name, message id
_Prepared = tuple[str, bytes, dict[str, str], str, FrameId]
_RETRY = Backoff(initial_seconds=0.1, max_seconds=2.0)


class Publisher:
    """One NATS connection publishing into the gateways' streams."""

    def __init__(self, settings: PublisherSettings, logger: logging.Logger | None = None) -> None:
        self.settings = settings
        self._log = logger or logging.getLogger("neurelay.publisher")
        self._nc: NatsClient | None = None
        self._acks: AckedPublishing | None = None
        self._dialling: asyncio.Future[AckedPublishing] | None = None
        # Ids made up for messages without one: unique per publisher instance.
        self._tag = secrets.token_hex(6)
        self._ids = itertools.count(1)

    async def __aenter__(self) -> Publisher:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        await self._connection()

    async def _connection(self) -> AckedPublishing:
        """The live connection's publishing, dialled again if the last one was lost.

        nats-py's own reconnect would keep unsent bytes and send them after bytes already
        lost in the dropped socket, storing later messages before earlier ones. Without
        it, what NATS got is a prefix of what was written, and the rest is published
        again in order.
        """
        if self._acks is not None and self._nc is not None and self._nc.is_connected:
            return self._acks
        # Every caller that found the link lost shares one attempt and its outcome: each
        # would otherwise dial, and all but the last connection would be left open.
        dialling = self._dialling
        if dialling is None:
            dialling = self._dialling = asyncio.ensure_future(self._dial())
            dialling.add_done_callback(self._dialled)
        # Shielded: one caller cancelled does not cancel the attempt the others wait for.
        return await asyncio.shield(dialling)

    def _dialled(self, dialling: asyncio.Future[AckedPublishing]) -> None:
        if self._dialling is dialling:
            self._dialling = None
        if not dialling.cancelled():
            dialling.exception()  # retrieved: its waiters, if any, raise it

    async def _dial(self) -> AckedPublishing:
        await self._drop()
        mine: list[AckedPublishing] = []

        async def on_closed() -> None:
            # Acks cannot come any more: fail what waits for them now, not at the timeout.
            for acks in mine:
                await acks.stop()

        try:
            nc = await nats.connect(
                servers=list(self.settings.servers),
                user_credentials=self.settings.credentials_file,
                connect_timeout=self.settings.connect_timeout_seconds,
                allow_reconnect=False,
                name="neurelay-publisher",
                closed_cb=on_closed,
            )
        except NATS_ERRORS as e:
            raise bus_error(e, "cannot connect to NATS") from e
        self._nc = nc
        acks = self._acks = AckedPublishing(nc, self.settings.ack_timeout_seconds)
        mine.append(acks)
        await acks.start()
        return acks

    async def _drop(self) -> None:
        if self._acks is not None:
            await self._acks.stop()
            self._acks = None
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.close()
            except NATS_ERRORS as e:
                self._log.debug("NATS connection closed uncleanly: %s", e)
        self._nc = None

    async def close(self) -> None:
        if self._dialling is not None:
            self._dialling.cancel()
            with contextlib.suppress(asyncio.CancelledError, BusError):
                await self._dialling
        if self._nc is not None and self._nc.is_connected:
            try:
                await self._nc.flush(timeout=max(1, math.ceil(self.settings.ack_timeout_seconds)))
            except NATS_ERRORS as e:
                self._log.debug("flush before closing failed: %s", e)
        await self._drop()

    async def publish(self, channel: str, payload: Any, id: FrameId | None = None) -> Published:
        """Publish one message; returns once it is stored."""
        (published,) = await self.publish_batch([(channel, payload, id)])
        return published

    async def publish_batch(self, messages: Iterable[Message]) -> list[Published]:
        """Publish messages in order, pipelined; returns once all are stored."""
        prepared = [self._prepare(*m) for m in messages]
        window = self.settings.max_in_flight
        results: list[Published] = []
        for start in range(0, len(prepared), window):
            # A window is stored completely before the next is written: a retry never
            # lands after a message of a later window.
            results += await self._publish_window(prepared[start : start + window])
        return results

    async def _publish_window(self, prepared: list[_Prepared]) -> list[Published]:
        results: list[Published | None] = [None] * len(prepared)
        todo = list(range(len(prepared)))
        deadline = time.monotonic() + self.settings.retry_seconds
        attempt = 0
        while True:
            failed, error = await self._send(prepared, todo, results)
            if not failed:
                return [r for r in results if r is not None]
            delay = _RETRY.delay(attempt)
            if time.monotonic() + delay > deadline:
                raise BusUnavailable(
                    f"{len(failed)} of {len(prepared)} messages not stored within "
                    f"{self.settings.retry_seconds:g} s: {error}"
                )
            self._log.info("retrying %d messages: %s", len(failed), error)
            await asyncio.sleep(delay)
            attempt += 1
            todo = failed

    def _prepare(self, channel: str, payload: Any, id: FrameId | None = None) -> _Prepared:
        parsed = parse_channel(channel)
        message_id: FrameId = id if id is not None else f"{self._tag}-{next(self._ids)}"
        user = self.settings.user
        body = envelopes.encode(payload, message_id, int(time.time() * 1000), user)
        key = envelopes.dedup_key(user, parsed, message_id)
        assert key is not None
        subject = stored_subject(self.settings.subject_prefix, parsed)
        return subject, body, {"Nats-Msg-Id": key}, parsed.name, message_id

    async def _send(
        self, prepared: list[_Prepared], todo: list[int], results: list[Published | None]
    ) -> tuple[list[int], BusUnavailable | None]:
        """Write `todo` in order and gather the acks; returns the indexes that failed retryably."""
        try:
            acks = await self._connection()
        except BusUnavailable as e:
            return todo, e
        pending: list[tuple[int, asyncio.Future[Ack]]] = []
        failed: list[int] = []
        error: BusUnavailable | None = None
        for position, index in enumerate(todo):
            subject, body, headers, _, _ = prepared[index]
            try:
                pending.append((index, await acks.publish(subject, body, headers)))
            except BusUnavailable as e:
                failed, error = todo[position:], e  # the rest goes again, in order
                break
            except BusError:
                await _settle(pending)
                raise
        stored_failed: list[int] = []
        for index, future in pending:
            try:
                seq, duplicate = await future
            except BusUnavailable as e:
                stored_failed.append(index)
                error = e
                continue
            except BusError:
                await _settle(pending)
                raise
            _, _, _, channel, message_id = prepared[index]
            results[index] = Published(channel, seq, message_id, duplicate)
        return stored_failed + failed, error


async def _settle(pending: list[tuple[int, asyncio.Future[Ack]]]) -> None:
    """Wait out the other acks, so none is left unretrieved when the call raises."""
    await asyncio.gather(*(f for _, f in pending), return_exceptions=True)
