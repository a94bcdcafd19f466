"""Replaying: reading a channel's retained history from JetStream for resume and gap repair.

Uses JetStream's direct get (`$JS.API.DIRECT.GET.<stream>`). Reading forward
(`since`) asks for batches from a start sequence (`next_by_subj`, `batch`,
`max_bytes`), so a replay costs a round trip per batch and no answer is
larger than `batch_bytes`. Each message of a batch names the sequence of the
one before it (`Nats-Last-Sequence`) and the end-of-batch status names the
last one sent, so a message lost on the way (a NATS reconnect, a dropped
reply) is detected: the replay fails with `IncompleteReplay` instead of
answering with a gap. Reading backward (`last: N`) asks for the newest
message and then, one request each, the newest before a sequence
(`multi_last` with `up_to_seq`): N messages read, never the whole history.
Every replay stops at `max_bytes` of messages, keeping the newest, and then
says `recovered: false`. nats-py errors are left to the caller (`Bus`) to map.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import nats.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from neurelay.errors import BusError, BusUnavailable
from neurelay.protocol.channels import Channel, stored_subject, stream_name

BATCH = 256


@dataclasses.dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as kept in a stream: its sequence and the envelope published."""

    seq: int
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class History:
    messages: list[StoredMessage]
    recovered: bool
    last_seq: int
    read: int = 0  # messages read from JetStream to answer


class ReplayError(BusError):
    """JetStream answered a direct get with an error status."""

    def __init__(self, status: str, description: str) -> None:
        super().__init__(f"{status} {description}")
        self.status = status


class IncompleteReplay(BusUnavailable):
    """A batch arrived with a message missing: the replay cannot vouch for what it read."""


@dataclasses.dataclass(frozen=True, slots=True)
class Budget:
    """How much one replay may read: bytes per JetStream answer and in all, and its timeout."""

    batch_bytes: int
    max_bytes: int
    timeout: float


class _Reader:
    """The reads of one replay of one channel, counting the messages read."""

    def __init__(self, nc: NatsClient, prefix: str, channel: Channel, budget: Budget) -> None:
        self.nc = nc
        self.prefix = prefix
        self.channel = channel
        self.subject = stored_subject(prefix, channel)
        self.budget = budget
        self.read = 0

    async def forward(self, start: int, limit: int) -> tuple[list[StoredMessage], bool]:
        """The first `limit` messages from sequence `start`, of which at most `max_bytes` (the
        newest) are kept; and whether all of them fitted."""
        kept: collections.deque[StoredMessage] = collections.deque()
        taken = size = 0
        complete = True
        while taken < limit:
            request = {
                "seq": start,
                "next_by_subj": self.subject,
                "batch": min(BATCH, limit - taken),
                "max_bytes": self.budget.batch_bytes,
            }
            batch, pending = await self._batch(request)
            for message in batch[: limit - taken]:
                taken += 1
                kept.append(message)
                size += len(message.data)
                while len(kept) > 1 and size > self.budget.max_bytes:
                    size -= len(kept.popleft().data)
                    complete = False
            if not batch or pending == 0:
                break
            start = batch[-1].seq + 1
        return list(kept), complete

    async def backward(self, count: int) -> tuple[list[StoredMessage], bool]:
        """The newest `count` messages, oldest first, within `max_bytes`; and whether all fitted."""
        found: list[StoredMessage] = []
        size = 0
        message = await self.newest()
        while message is not None:
            if found and size + len(message.data) > self.budget.max_bytes:
                found.reverse()
                return found, False
            found.append(message)
            size += len(message.data)
            if len(found) >= count:
                break
            message = await self.newest(before=message.seq)
        found.reverse()
        return found, True

    async def newest(self, before: int | None = None) -> StoredMessage | None:
        """The newest message of the channel, or the newest before sequence `before`."""
        if before is None:
            request: dict[str, object] = {"last_by_subj": self.subject}
            found = await self._single(request)
        else:
            if before <= 1:
                return None
            request = {"multi_last": [self.subject], "up_to_seq": before - 1, "batch": 1}
            found, _ = await self._batch(request)
        return found[-1] if found else None

    async def first(self) -> StoredMessage | None:
        """The oldest retained message of the channel."""
        found, _ = await self._batch({"seq": 1, "next_by_subj": self.subject, "batch": 1})
        return found[0] if found else None

    async def _single(self, request: Mapping[str, object]) -> list[StoredMessage]:
        async with self._replies(request) as replies:
            msg = await replies.get()
            status = _status(msg)
            if status is None:
                self.read += 1
                return [StoredMessage(_seq(msg), msg.data)]
            return []

    async def _batch(self, request: Mapping[str, object]) -> tuple[list[StoredMessage], int]:
        """One batched request: its messages, checked to follow on, and the count pending."""
        found: list[StoredMessage] = []
        async with self._replies(request) as replies:
            while True:
                msg = await replies.get()
                headers = msg.headers or {}
                previous = found[-1].seq if found else 0
                status = _status(msg)
                if status is None:
                    if int(headers.get("Nats-Last-Sequence", previous)) != previous:
                        raise IncompleteReplay(
                            f"a message of {self.channel.name} before seq {_seq(msg)} is missing"
                        )
                    self.read += 1
                    found.append(StoredMessage(_seq(msg), msg.data))
                    continue
                if int(headers.get("Nats-Last-Sequence", previous)) != previous:
                    raise IncompleteReplay(f"the end of a batch of {self.channel.name} is missing")
                return found, int(headers.get("Nats-Num-Pending", "0"))

    @contextlib.asynccontextmanager
    async def _replies(self, request: Mapping[str, object]) -> AsyncIterator[_Replies]:
        """Send one direct-get request; its replies arrive within the replay's timeout."""
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        subscription = await self.nc.subscribe(self.nc.new_inbox(), cb=_put(queue))
        try:
            subject = f"$JS.API.DIRECT.GET.{stream_name(self.prefix, self.channel.namespace)}"
            await self.nc.publish(subject, orjson.dumps(request), reply=subscription.subject)
            async with asyncio.timeout(self.budget.timeout):
                yield _Replies(queue)
        finally:
            await subscription.unsubscribe()


class _Replies:
    __slots__ = ("_queue",)

    def __init__(self, queue: asyncio.Queue[Msg]) -> None:
        self._queue = queue

    async def get(self) -> Msg:
        """The next reply: a message or the end of the answer; error statuses raise."""
        msg = await self._queue.get()
        status = _status(msg)
        if status in (None, "204", "404"):
            return msg
        if status == "503":
            raise nats.errors.NoRespondersError
        raise ReplayError(status, str((msg.headers or {}).get("Description", "")))


def _status(msg: Msg) -> str | None:
    status = (msg.headers or {}).get("Status")
    return None if status is None else str(status)


def _seq(msg: Msg) -> int:
    return int((msg.headers or {})["Nats-Sequence"])


async def history(
    nc: NatsClient,
    prefix: str,
    channel: Channel,
    since: int | None,
    last: int | None,
    limit: int,
    budget: Budget,
) -> History:
    """Retained messages after `since` (at most `limit`), or the last `last` of them."""
    reader = _Reader(nc, prefix, channel, budget)
    if since is None:
        if not last:
            newest = await reader.newest()
            return History([], True, newest.seq if newest else 0, reader.read)
        messages, complete = await reader.backward(min(last, limit))
        last_seq = messages[-1].seq if messages else 0
        return History(messages, complete, last_seq, reader.read)
    if since > 0:
        first = await reader.first()
        if first is None:
            return History([], False, 0, reader.read)
        if first.seq > since:
            # Retention has passed `since`: what lay between may be gone.
            messages, _ = await reader.forward(first.seq, limit)
            return History(messages, False, messages[-1].seq, reader.read)
    messages, complete = await reader.forward(since + 1, limit)
    if messages:
        return History(messages, complete, messages[-1].seq, reader.read)
    if since == 0:
        return History([], True, 0, reader.read)
    # Nothing after `since`: either the client is up to date, or the stream was re-created
    # and its sequences started again below `since`.
    newest = await reader.newest()
    if newest is not None and newest.seq < since:
        everything, _ = await reader.forward(1, limit)
        return History(everything, False, everything[-1].seq if everything else 0, reader.read)
    return History([], True, newest.seq if newest is not None else 0, reader.read)


async def last_message(
    nc: NatsClient, prefix: str, channel: Channel, budget: Budget
) -> StoredMessage | None:
    """The newest retained message of `channel`, if any."""
    return await _Reader(nc, prefix, channel, budget).newest()


def _put(queue: asyncio.Queue[Msg]) -> Callable[[Msg], Awaitable[None]]:
    async def put(msg: Msg) -> None:
        queue.put_nowait(msg)

    return put
