"""Cursor: where one subscription stands, and what to ask for when (re)subscribing.

Sans I/O: the client feeds it the gateway's `subscribed` replies and
`message` frames and asks it for the next `subscribe` frame. It remembers the
last `seq` delivered, drops messages at or below it (sent again around a
reconnect), and after a reconnect resumes with `since` so nothing is missed
or repeated.
"""

from __future__ import annotations

from typing import Any

from neurelay.protocol import frames
from neurelay.protocol.server_frames import Message, Subscribed


class Cursor:
    def __init__(self, channel: str, since: int | None, last: int | None) -> None:
        self.channel = channel
        self.last_seq = since or 0
        """The seq of the last message delivered (or `since` before any)."""
        self.recovered = True
        """From the latest `subscribed`: False when some requested history may be gone."""
        self.duplicates = 0
        """Messages the gateway sent again (e.g. around a reconnect) that were dropped by seq."""
        self._since = since
        self._last = last
        self._acknowledged = False
        # The channel's seq when the gateway confirmed the subscription: history, if asked
        # for, ends there, and a plain subscription continues from there.
        self._position = 0

    def request(self) -> dict[str, Any]:
        """The subscribe frame for now: the first one, or a resume after a reconnect."""
        wants_history = self._since is not None or self._last is not None
        if self._acknowledged and not (wants_history and self.last_seq < self._position):
            return frames.subscribe(self.channel, since=max(self.last_seq, self._position))
        if self._since is not None or self.last_seq:
            return frames.subscribe(self.channel, since=max(self._since or 0, self.last_seq))
        if self._last is not None:
            return frames.subscribe(self.channel, last=self._last)
        return frames.subscribe(self.channel)

    def acknowledge(self, reply: Subscribed) -> None:
        """The gateway confirmed a subscribe frame of ours."""
        self.recovered = reply.recovered
        self._position = max(self._position, reply.seq)
        self._acknowledged = True

    def admit(self, message: Message) -> bool:
        """True if the message is new; False (and counted) if it was delivered already."""
        if message.seq:
            if message.seq <= self.last_seq:
                self.duplicates += 1
                return False
            self.last_seq = message.seq
        return True
