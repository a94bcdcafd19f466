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
raises `BusUnavailable`. A batch is not atomic: on an error, the messages
before it may be stored, and a message retried after a later one of its
batch was stored lands after it. Only namespaces that keep history have a
stream to publish to. The publisher is trusted: no token, no per-channel
authorization (give it NATS credentials limited to `<prefix>.s.>`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
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
_RETRY = Backoff(initial_seconds=0.1, max_seconds=2.0)


class Publisher:
    """One NATS connection publishing into the gateways' streams."""

    def __init__(self, settings: PublisherSettings, logger: logging.Logger | None = None) -> None:
        self.settings = settings
        self._log = logger or logging.getLogger("neurelay.publisher")
        self._nc: NatsClient | None = None
        self._acks: AckedPublishing | None = None
        # Ids made up for messages without one: unique per publisher instance.
        self._tag = secrets.token_hex(6)
        self._ids = itertools.count(1)

    async def __aenter__(self) -> Publisher:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        try:
            self._nc = await nats.connect(
                servers=list(self.settings.servers),
                user_credentials=self.settings.credentials_file,
                connect_timeout=self.settings.connect_timeout_seconds,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
                name="neurelay-publisher",
            )
        except NATS_ERRORS as e:
            raise bus_error(e, "cannot connect to NATS") from e
        self._acks = AckedPublishing(self._nc, self.settings.ack_timeout_seconds)
        await self._acks.start()

    async def close(self) -> None:
        if self._acks is not None:
            await self._acks.stop()
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.drain()
            except NATS_ERRORS as e:
                self._log.debug("NATS connection closed uncleanly: %s", e)

    async def publish(self, channel: str, payload: Any, id: FrameId | None = None) -> Published:
        """Publish one message; returns once it is stored."""
        (published,) = await self.publish_batch([(channel, payload, id)])
        return published

    async def publish_batch(self, messages: Iterable[Message]) -> list[Published]:
        """Publish messages in order, pipelined; returns once all are stored."""
        prepared = [self._prepare(*m) for m in messages]
        results: list[Published | None] = [None] * len(prepared)
        todo = list(range(len(prepared)))
        deadline = time.monotonic() + self.settings.retry_seconds
        attempt = 0
        while True:
            failed, error = await self._send(prepared, todo, results)
            if not failed:
                return [r for r in results if r is not None]
            if time.monotonic() + _RETRY.delay(attempt) > deadline:
                raise BusUnavailable(
                    f"{len(failed)} of {len(prepared)} messages not stored within "
                    f"{self.settings.retry_seconds:g} s: {error}"
                )
            self._log.info("retrying %d messages: %s", len(failed), error)
            await asyncio.sleep(_RETRY.delay(attempt))
            attempt += 1
            todo = failed

    def _prepare(
        self, channel: str, payload: Any, id: FrameId | None = None
    ) -> tuple[str, bytes, dict[str, str], str, FrameId]:
        parsed = parse_channel(channel)
        message_id: FrameId = id if id is not None else f"{self._tag}-{next(self._ids)}"
        user = self.settings.user
        body = envelopes.encode(payload, message_id, int(time.time() * 1000), user)
        key = envelopes.dedup_key(user, message_id)
        assert key is not None
        subject = stored_subject(self.settings.subject_prefix, parsed)
        return subject, body, {"Nats-Msg-Id": key}, parsed.name, message_id

    async def _send(
        self,
        prepared: list[tuple[str, bytes, dict[str, str], str, FrameId]],
        todo: list[int],
        results: list[Published | None],
    ) -> tuple[list[int], BusUnavailable | None]:
        """One pass over `todo` in windows; returns the indexes that failed retryably."""
        if self._acks is None:
            raise BusUnavailable("the publisher is not connected")
        failed: list[int] = []
        error: BusUnavailable | None = None
        window = self.settings.max_in_flight
        for start in range(0, len(todo), window):
            pending: list[tuple[int, asyncio.Future[Ack] | BusUnavailable]] = []
            for index in todo[start : start + window]:
                subject, body, headers, _, _ = prepared[index]
                try:
                    pending.append((index, await self._acks.publish(subject, body, headers)))
                except BusUnavailable as e:
                    pending.append((index, e))
                except BusError:
                    await _settle(pending)
                    raise
            for index, outcome in pending:
                try:
                    if isinstance(outcome, BusUnavailable):
                        raise outcome
                    seq, duplicate = await outcome
                except BusUnavailable as e:
                    failed.append(index)
                    error = e
                    continue
                except BusError:
                    await _settle(pending)
                    raise
                _, _, _, channel, message_id = prepared[index]
                results[index] = Published(channel, seq, message_id, duplicate)
        return failed, error


async def _settle(pending: list[tuple[int, asyncio.Future[Ack] | BusUnavailable]]) -> None:
    """Wait out a window's other acks, so none is left unretrieved when the call raises."""
    futures = [f for _, f in pending if isinstance(f, asyncio.Future)]
    await asyncio.gather(*futures, return_exceptions=True)
