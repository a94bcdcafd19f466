"""Subscription: what a caller of `Client.subscribe` holds: one channel's messages.

The client keeps a `Following` per channel: the `Cursor` (what was
delivered) and the inbox, a queue it fills with new messages and ends with
None when the subscription or the client ends. The `Subscription` handed to
the caller only reads them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

from neurelay.client.cursor import Cursor
from neurelay.errors import ConnectionLost
from neurelay.protocol.server_frames import Message


@dataclasses.dataclass(frozen=True, slots=True)
class Following:
    """The client's side of one subscription."""

    cursor: Cursor
    inbox: asyncio.Queue[Message | None] = dataclasses.field(default_factory=asyncio.Queue)

    def deliver(self, message: Message) -> None:
        if self.cursor.admit(message):
            self.inbox.put_nowait(message)

    def end(self) -> None:
        self.inbox.put_nowait(None)


class Subscription:
    """Messages of one channel, in order, each once; iterate with `async for`."""

    def __init__(self, following: Following) -> None:
        self.channel = following.cursor.channel
        self._cursor = following.cursor
        self._inbox = following.inbox

    @property
    def last_seq(self) -> int:
        """The seq of the last message delivered (0, or `since`, before any)."""
        return self._cursor.last_seq

    @property
    def recovered(self) -> bool:
        """False when the gateway could not promise all requested history was still there."""
        return self._cursor.recovered

    @property
    def duplicates(self) -> int:
        """Messages sent again around a reconnect and dropped by seq."""
        return self._cursor.duplicates

    async def get(self, timeout: float | None = None) -> Message:
        """The next message; raises `ConnectionLost` once the subscription has ended."""
        item = await asyncio.wait_for(self._inbox.get(), timeout)
        if item is None:
            self._inbox.put_nowait(None)  # ended for every later reader too
            raise ConnectionLost("subscription ended")
        return item

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.get()
        except ConnectionLost:
            raise StopAsyncIteration from None
