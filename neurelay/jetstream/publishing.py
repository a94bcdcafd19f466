"""Publishing: JetStream publishes pipelined on one connection, their acks gathered.

nats-py's `JetStream.publish` is a request per message: a fresh future, a
reply subscription token, an `asyncio.wait_for` task and a dataclass parse of
the ack. `AckedPublishing` instead subscribes once to a wildcard inbox,
writes each message with its own reply subject without waiting, and matches
acks to futures by their reply token (parsed with orjson). Many publishes are
then in flight at once, the writes coalesce into few socket writes, and an
awaiting caller costs one future. A publish not acked within the timeout
fails with `BusUnavailable` (its message may or may not be stored: publish
again with the same `Nats-Msg-Id` and JetStream de-duplicates it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import Mapping

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from neurelay.errors import BusError, BusUnavailable, PayloadTooLarge
from neurelay.jetstream.errors import NATS_ERRORS, bus_error

Ack = tuple[int, bool]  # (stream sequence, duplicate)


class AckedPublishing:
    """Pipelined JetStream publishes on `nc`; one instance per connection."""

    def __init__(self, nc: NatsClient, timeout: float) -> None:
        self._nc = nc
        self.timeout = timeout
        self._prefix = f"_INBOX.{secrets.token_hex(8)}."
        self._tokens = itertools.count(1)
        self._pending: dict[bytes, tuple[asyncio.Future[Ack], asyncio.TimerHandle]] = {}
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        try:
            self._subscription = await self._nc.subscribe(
                self._prefix + "*",
                cb=self._on_ack,
                pending_msgs_limit=-1,
                pending_bytes_limit=-1,
            )
        except NATS_ERRORS as e:
            raise bus_error(e, "cannot subscribe to acks") from e

    async def stop(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(*NATS_ERRORS):
                await self._subscription.unsubscribe()
            self._subscription = None
        for future, timer in self._pending.values():
            timer.cancel()
            if not future.done():
                future.set_exception(BusUnavailable("publish failed: publisher closed"))
        self._pending.clear()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def publish(
        self, subject: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> asyncio.Future[Ack]:
        """Write one message; returns the future of its ack (await it to learn the seq)."""
        if self._subscription is None:
            raise BusUnavailable("publish failed: acks are not being received")
        if len(body) > self._nc.max_payload:
            raise PayloadTooLarge("publish failed: the message exceeds the NATS max_payload")
        token = b"%x" % next(self._tokens)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Ack] = loop.create_future()
        timer = loop.call_later(self.timeout, self._expire, token)
        self._pending[token] = (future, timer)
        try:
            await self._nc.publish(
                subject,
                body,
                reply=self._prefix + token.decode(),
                headers=dict(headers) if headers else None,
            )
        except NATS_ERRORS as e:
            self._forget(token)
            raise bus_error(e, "publish failed") from e
        return future

    def _forget(self, token: bytes) -> tuple[asyncio.Future[Ack], asyncio.TimerHandle] | None:
        entry = self._pending.pop(token, None)
        if entry is not None:
            entry[1].cancel()
        return entry

    def _expire(self, token: bytes) -> None:
        entry = self._pending.pop(token, None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(BusUnavailable("publish failed: no ack in time"))

    async def _on_ack(self, msg: Msg) -> None:
        entry = self._forget(msg.subject[len(self._prefix) :].encode())
        if entry is None or entry[0].done():
            return
        outcome = _outcome(msg)
        if isinstance(outcome, BusError):
            entry[0].set_exception(outcome)
        else:
            entry[0].set_result(outcome)


def _outcome(msg: Msg) -> Ack | BusError:
    """The ack in a reply, or the error it reports: no responders, or JetStream refusing."""
    if msg.headers and msg.headers.get("Status") == "503":
        return BusUnavailable("publish failed: no stream answered (no responders)")
    try:
        body = orjson.loads(msg.data)
        if "error" not in body:
            return int(body["seq"]), bool(body.get("duplicate", False))
        error = body["error"]
        code, text = error.get("code"), error.get("description", "unknown")
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return BusError(f"publish failed: unreadable reply {msg.data[:200]!r}")
    if code == 503:
        return BusUnavailable(f"publish failed: {text}")
    return BusError(f"publish failed: {text} (code {code}, {error.get('err_code')})")
