"""Replaying: reading a channel's retained history from JetStream for resume and gap repair.

Uses JetStream's batched direct get (`$JS.API.DIRECT.GET.<stream>` with
`next_by_subj` and `batch`): one request returns up to a batch of one
channel's messages from a start sequence, followed by an end-of-batch status
carrying how many remain, so a replay costs a round trip per batch rather
than per message. nats-py errors are left to the caller (`Bus`) to map.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping

import nats.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from neurelay.errors import BusError
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


class ReplayError(BusError):
    """JetStream answered a direct get with an error status."""

    def __init__(self, status: str, description: str) -> None:
        super().__init__(f"{status} {description}")
        self.status = status


async def history(
    nc: NatsClient,
    prefix: str,
    channel: Channel,
    since: int | None,
    last: int | None,
    limit: int,
    timeout: float,
) -> History:
    """Retained messages after `since` (at most `limit`), or the last `last` of them."""
    if since is None:
        everything, _ = await _read(nc, prefix, channel, 1, None, timeout)
        messages = everything[-last:] if last else []
        return History(messages, True, everything[-1].seq if everything else 0)
    first, _ = await _read(nc, prefix, channel, 1, 1, timeout)
    if not first:
        return History([], since == 0, 0)
    if since > 0 and first[0].seq > since:
        # Retention has passed `since`: what lay between may be gone.
        messages, _ = await _read(nc, prefix, channel, first[0].seq, limit, timeout)
        return History(messages, False, messages[-1].seq)
    messages, _ = await _read(nc, prefix, channel, since + 1, limit, timeout)
    if messages:
        return History(messages, True, messages[-1].seq)
    # Nothing after `since`: either the client is up to date, or the stream was re-created
    # and its sequences started again below `since`.
    newest = await last_message(nc, prefix, channel, timeout)
    if newest is not None and newest.seq < since:
        everything, _ = await _read(nc, prefix, channel, 1, limit, timeout)
        return History(everything, False, everything[-1].seq if everything else 0)
    return History([], True, newest.seq if newest is not None else 0)


async def _read(
    nc: NatsClient,
    prefix: str,
    channel: Channel,
    start: int,
    limit: int | None,
    timeout: float,
) -> tuple[list[StoredMessage], bool]:
    """Messages of `channel` from sequence `start`, at most `limit`; and whether more remain."""
    found: list[StoredMessage] = []
    while limit is None or len(found) < limit:
        want = BATCH if limit is None else min(BATCH, limit - len(found))
        batch, pending = await _direct_get(nc, prefix, channel, start, want, timeout)
        found.extend(batch)
        if not batch or pending == 0:
            return found, False
        start = batch[-1].seq + 1
    return found, True


async def last_message(
    nc: NatsClient, prefix: str, channel: Channel, timeout: float
) -> StoredMessage | None:
    """The newest retained message of `channel`, if any."""
    request = {"last_by_subj": stored_subject(prefix, channel)}
    batch, _ = await _request(nc, prefix, channel, request, timeout)
    return batch[-1] if batch else None


async def _direct_get(
    nc: NatsClient, prefix: str, channel: Channel, start: int, count: int, timeout: float
) -> tuple[list[StoredMessage], int]:
    request = {"seq": start, "next_by_subj": stored_subject(prefix, channel), "batch": count}
    return await _request(nc, prefix, channel, request, timeout)


async def _request(
    nc: NatsClient, prefix: str, channel: Channel, request: Mapping[str, object], timeout: float
) -> tuple[list[StoredMessage], int]:
    """One direct-get request; returns its messages and the count still pending."""
    inbox = nc.new_inbox()
    replies: asyncio.Queue[Msg] = asyncio.Queue()
    subscription = await nc.subscribe(inbox, cb=_put(replies))
    try:
        subject = f"$JS.API.DIRECT.GET.{stream_name(prefix, channel.namespace)}"
        await nc.publish(subject, orjson.dumps(request), reply=inbox)
        found: list[StoredMessage] = []
        async with asyncio.timeout(timeout):
            while True:
                msg = await replies.get()
                headers = msg.headers or {}
                status = headers.get("Status")
                if status is None:
                    found.append(StoredMessage(int(headers["Nats-Sequence"]), msg.data))
                    if "batch" not in request:
                        return found, 0
                    continue
                if status == "204":
                    return found, int(headers.get("Nats-Num-Pending", "0"))
                if status == "404":
                    return found, 0
                if status == "503":
                    raise nats.errors.NoRespondersError
                raise ReplayError(status, str(headers.get("Description", "")))
    finally:
        await subscription.unsubscribe()


def _put(queue: asyncio.Queue[Msg]) -> Callable[[Msg], Awaitable[None]]:
    async def put(msg: Msg) -> None:
        queue.put_nowait(msg)

    return put
