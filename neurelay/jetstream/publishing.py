"""Publishing: JetStream publishes pipelined on one connection, their acks gathered.

nats-py's `JetStream.publish` is a request per message: a fresh future, a
reply subscription token, an `asyncio.wait_for` task and a dataclass parse of
the ack. `AckedPublishing` instead subscribes once to a wildcard inbox,
writes each message with its own reply subject without waiting, and matches
acks by their reply token (parsed with orjson) to whoever is told the
outcome: an `AckReceiver` called once per message (`send`, no future, no
task), or a future (`publish`). Many publishes are then in flight at once and
the writes coalesce into few socket writes. One timer, not one per message,
fails a publish not acked within the timeout with `BusUnavailable` (its
message may or may not be stored: publish again with the same `Nats-Msg-Id`
and JetStream de-duplicates it). A message is refused with `PayloadTooLarge`
before it is written when its `nats_size` (headers and body, as the server
counts them) exceeds the server's max_payload: the server would otherwise
drop the whole connection, and nats-py would never reconnect it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import Mapping
from typing import Any, Protocol

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from neurelay.errors import BusError, BusUnavailable, PayloadTooLarge
from neurelay.jetstream.errors import NATS_ERRORS, bus_error

Ack = tuple[int, bool]  # (stream sequence, duplicate)

# The header block nats-py writes: `NATS/1.0\r\n`, `key: value\r\n` per header, `\r\n`.
_HEADER_LINE_BYTES = len(b"NATS/1.0\r\n")
_HEADER_SEPARATOR_BYTES = len(b": \r\n")
_HEADER_END_BYTES = len(b"\r\n")


def nats_size(body: bytes, headers: Mapping[str, str] | None) -> int:
    """The bytes the NATS server compares with its max_payload: headers and body.

    The header block is counted as nats-py writes it (keys and values stripped, empty keys
    skipped; its replacement of CR/LF in values by spaces keeps the length).
    """
    if headers is None:
        return len(body)
    size = _HEADER_LINE_BYTES + _HEADER_END_BYTES + len(body)
    for name, value in headers.items():
        key = name.strip()
        if key:
            size += len(key.encode()) + _HEADER_SEPARATOR_BYTES + len(value.strip().encode())
    return size


class AckReceiver(Protocol):
    """Told the outcome of each publish it sent, once: its ack, or the error instead."""

    def settle(self, key: Any, outcome: Ack | BusError) -> None: ...


class _Futures:
    """The receiver behind `AckedPublishing.publish`: the key is the future to resolve."""

    def settle(self, key: Any, outcome: Ack | BusError) -> None:
        future: asyncio.Future[Ack] = key
        if future.done():
            return
        if isinstance(outcome, BusError):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


_FUTURES = _Futures()


class AckedPublishing:
    """Pipelined JetStream publishes on `nc`; one instance per connection."""

    def __init__(self, nc: NatsClient, timeout: float) -> None:
        self._nc = nc
        self.timeout = timeout
        self._prefix = f"_INBOX.{secrets.token_hex(8)}."
        self._tokens = itertools.count(1)
        # In write order, so the oldest (the first to expire) comes first.
        self._pending: dict[str, tuple[AckReceiver, Any, float]] = {}
        self._expiry: asyncio.TimerHandle | None = None
        self._subscription: Subscription | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop `start` ran on

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
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
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        pending, self._pending = self._pending, {}
        for receiver, key, _ in pending.values():
            receiver.settle(key, BusUnavailable("publish failed: publisher closed"))

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def send(
        self,
        subject: str,
        body: bytes,
        headers: Mapping[str, str] | None,
        receiver: AckReceiver,
        key: Any,
    ) -> None:
        """Write one message; `receiver.settle(key, ...)` is called once with its outcome.

        Raises BusError when the message cannot be written (then `settle` is never called).
        """
        loop = self._loop
        if self._subscription is None or loop is None:
            raise BusUnavailable("publish failed: acks are not being received")
        size = nats_size(body, headers)
        if size > self._nc.max_payload:
            raise PayloadTooLarge(
                f"publish failed: the message ({size} bytes with its headers) exceeds "
                f"the NATS max_payload ({self._nc.max_payload} bytes)"
            )
        token = f"{next(self._tokens):x}"
        deadline = loop.time() + self.timeout
        self._pending[token] = (receiver, key, deadline)
        if self._expiry is None:
            self._expiry = loop.call_at(deadline, self._expire)
        if headers is not None and not isinstance(headers, dict):
            headers = dict(headers)
        try:
            await self._nc.publish(subject, body, reply=self._prefix + token, headers=headers)
        except NATS_ERRORS as e:
            self._pending.pop(token, None)
            raise bus_error(e, "publish failed") from e

    async def publish(
        self, subject: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> asyncio.Future[Ack]:
        """Write one message; returns the future of its ack (await it to learn the seq)."""
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        await self.send(subject, body, headers, _FUTURES, future)
        return future

    def _expire(self) -> None:
        """Fail the publishes past their deadline; come back at the next one's."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        expired = []
        for token, (_, _, deadline) in self._pending.items():
            if deadline > now:
                self._expiry = loop.call_at(deadline, self._expire)
                break
            expired.append(token)
        for token in expired:
            receiver, key, _ = self._pending.pop(token)
            receiver.settle(key, BusUnavailable("publish failed: no ack in time"))

    async def _on_ack(self, msg: Msg) -> None:
        entry = self._pending.pop(msg.subject[len(self._prefix) :], None)
        if entry is not None:
            entry[0].settle(entry[1], _outcome(msg))


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
