"""Replying: a connection's replies in the order of the frames they answer.

A connection's publishes are pipelined: the pump reads on while the earlier
ones wait for JetStream's acks. Their replies (`published`, or the error) and
every reply to a frame read after them still go out in the frames' order: a
reply waits while one before it does. A publish costs one small `Awaited`
(no future, no task); the pump waits only when too many replies are held, or
before a frame whose work must not overtake the publishes before it (a
subscribe, say). Nothing here does I/O: replies go to the `send` given.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from neurelay.errors import ProtocolError
from neurelay.protocol import frames
from neurelay.protocol.channels import Channel
from neurelay.protocol.frames import FrameId

# Replies a connection may hold before its pump stops reading: publishes in flight per client.
MAX_HELD = 256

Frame = dict[str, Any]


class Reply:
    """A reply in line; `frame` is None until its publish's outcome is known."""

    __slots__ = ("frame",)

    def __init__(self, frame: Frame | None) -> None:
        self.frame = frame


class Awaited(Reply):
    """The reply to one publish in flight (a `runtime.Publication`)."""

    __slots__ = ("_replies", "channel", "message_id")

    def __init__(self, replies: Replies, channel: Channel, message_id: FrameId | None) -> None:
        super().__init__(None)
        self._replies = replies
        self.channel = channel
        self.message_id = message_id

    def published(self, seq: int, duplicate: bool) -> None:
        self.frame = frames.published(self.channel.name, seq, self.message_id, duplicate=duplicate)
        self._replies.release()

    def refused(self, error: ProtocolError) -> None:
        self.frame = frames.error_from(error)
        self._replies.release()


class Replies:
    """One connection's replies: sent at once, unless a publish's reply before them waits."""

    __slots__ = ("_held", "_send", "_waiter", "_wake_below")

    def __init__(self, send: Callable[[Frame], None]) -> None:
        self._send = send
        self._held: deque[Reply] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._wake_below = 0

    @property
    def held(self) -> int:
        """Replies not sent yet: publishes in flight and the replies behind them."""
        return len(self._held)

    def expect(self, channel: Channel, message_id: FrameId | None) -> Awaited:
        """The reply of a publish about to be written, in line behind those before it."""
        awaited = Awaited(self, channel, message_id)
        self._held.append(awaited)
        return awaited

    def send(self, frame: Frame) -> None:
        if self._held:
            self._held.append(Reply(frame))
        else:
            self._send(frame)

    def release(self) -> None:
        """Send the replies now due: those up to the first still waiting for its ack."""
        held = self._held
        while held and held[0].frame is not None:
            frame = held.popleft().frame
            assert frame is not None
            self._send(frame)
        waiter = self._waiter
        if waiter is not None and len(held) < self._wake_below:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def below(self, count: int) -> None:
        """Return once fewer than `count` replies are held (1: once all are sent)."""
        while len(self._held) >= count:
            waiter = self._waiter
            if waiter is None or waiter.done():
                waiter = self._waiter = asyncio.get_running_loop().create_future()
                self._wake_below = count
            else:
                # Woken for the first waiter's count, each checks its own and waits again.
                self._wake_below = max(self._wake_below, count)
            await waiter
