"""Broadcasting: a channel's frames of one event-loop pass, turned into wire bytes once.

The hub collects what a channel brings during one pass of the event loop
(messages, and the join/leave notices everyone in the channel gets) in a
`Broadcast`, and sends it at the end of the pass. For every subscriber that
is up to date (live, needing every message of the pass, nothing of its
connection waiting to be written, and its socket buffer small) the same bytes
object goes to its transport: the pass's WebSocket frames, header included
(server frames are unmasked, so they are the same for everyone), built once
per wire format (JSON or MessagePack, one frame per message or `+batch`).
So a delivery costs one `write` per subscriber and pass, whatever the number
of messages, and no Python work per message and subscriber. Everyone else (a
subscriber still reading its history, one that already has some of these
messages, one whose connection has frames queued, a slow consumer, the
member a notice is about, and everyone when the pass is over
`DIRECT_WRITE_LIMIT` bytes) gets the pass message by message through its
outbox, as before, which keeps its order, its sequence filter and its
bounds. A subscriber that catches up takes the shared path again once its
outbox is empty, so it never overtakes its own queue.
"""

from __future__ import annotations

import sys
from typing import Any

from neurelay.gateway.outbox import DIRECT_WRITE_LIMIT, Outbox, batches, websocket_frame
from neurelay.protocol.codecs import BATCH_FRAME_BYTES, CODECS, JSON_SUBPROTOCOL, Codec


class Follower:
    """One outbox following one channel."""

    __slots__ = ("backlog", "connection", "last_seq", "outbox")

    def __init__(self, outbox: Outbox, connection: str) -> None:
        self.outbox = outbox
        self.connection = connection
        self.last_seq = 0
        # Live messages held while history is read; None once live.
        self.backlog: list[tuple[int, dict[str, Any]]] | None = []


class Broadcast:
    """What one channel brought during one pass of the event loop, in order."""

    __slots__ = (
        "_encoded",
        "_framed",
        "_wire",
        "abouts",
        "entries",
        "first_seq",
        "last_seq",
        "messages",
    )

    def __init__(self) -> None:
        # (seq, frame, about): seq 0 for a message without one; `about` the connection a
        # join/leave notice is about (it is not sent there), None for a message.
        self.entries: list[tuple[int, dict[str, Any], str | None]] = []
        self.abouts: set[str] = set()
        self.first_seq = sys.maxsize  # of the sequenced messages
        self.last_seq = 0
        self.messages = 0
        self._encoded: dict[bool, list[bytes]] = {}  # by encoding (binary or not)
        self._framed: dict[bool, list[bytes]] = {}  # the same, each as a WebSocket frame
        self._wire: dict[Codec, bytes] = {}

    def add_message(self, seq: int, frame: dict[str, Any]) -> None:
        self.entries.append((seq, frame, None))
        self.messages += 1
        if seq:
            self.first_seq = min(self.first_seq, seq)
            self.last_seq = seq

    def add_notice(self, frame: dict[str, Any], about: str) -> None:
        self.entries.append((0, frame, about))
        self.abouts.add(about)

    def encoded(self, codec: Codec) -> list[bytes]:
        """Each entry encoded for `codec` (a `+batch` codec encodes like its base)."""
        encoded = self._encoded.get(codec.binary)
        if encoded is None:
            encoded = self._encoded[codec.binary] = [
                codec.encode(frame) for _, frame, _ in self.entries
            ]
        return encoded

    def framed(self, codec: Codec) -> list[bytes]:
        """Each entry encoded for `codec`, as a WebSocket frame of its own."""
        framed = self._framed.get(codec.binary)
        if framed is None:
            framed = self._framed[codec.binary] = [
                websocket_frame(payload, codec.binary) for payload in self.encoded(codec)
            ]
        return framed

    def wire(self, codec: Codec) -> bytes:
        """Every entry as the WebSocket frames a `codec` connection gets, header included."""
        if codec.batched:
            return b"".join(
                websocket_frame(body, codec.binary)
                for body in batches(self.encoded(codec), codec.separator, BATCH_FRAME_BYTES)
            )
        framed = self.framed(codec)
        return framed[0] if len(framed) == 1 else b"".join(framed)

    def drop_unencodable(self) -> list[int]:
        """Remove the entries JSON cannot encode; their seqs (0 for a notice).

        Others can write envelopes into the stream directly, and one nested
        deeper than the encoders go must cost only itself, never the rest of
        the pass. JSON's limits are the stricter (MessagePack encodes what
        JSON does), and its bytes are kept for the JSON followers.
        """
        encoded: list[bytes] = []
        kept: list[tuple[int, dict[str, Any], str | None]] = []
        dropped: list[int] = []
        for entry in self.entries:
            try:
                encoded.append(CODECS[JSON_SUBPROTOCOL].encode(entry[1]))
            except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
                dropped.append(entry[0])
            else:
                kept.append(entry)
        if dropped:
            self.entries = kept
            self.messages = sum(1 for _, _, about in kept if about is None)
            self.first_seq = min((seq for seq, _, _ in kept if seq), default=sys.maxsize)
            self.last_seq = max((seq for seq, _, _ in kept if seq), default=0)
        self._encoded[False] = encoded
        return dropped

    def send(self, followers: list[Follower], queue_frames: int) -> int:
        """Send the pass to `followers`; returns how many messages were delivered.

        `queue_frames` bounds a follower's backlog while its history is read;
        `drop_unencodable` must have run.
        """
        first_seq, last_seq, abouts, wires = self.first_seq, self.last_seq, self.abouts, self._wire
        delivered = 0
        for follower in followers:
            outbox = follower.outbox
            if (
                follower.backlog is None
                and follower.last_seq < first_seq
                and (not abouts or follower.connection not in abouts)
            ):
                transport = outbox.idle_transport()
                if transport is not None:
                    codec = outbox.codec
                    wire = wires.get(codec)
                    if wire is None:
                        wire = wires[codec] = self.wire(codec)
                    # A bigger pass goes the outbox's way, whose queue bounds a slow consumer.
                    if len(wire) <= DIRECT_WRITE_LIMIT:
                        transport.write(wire)
                        if last_seq:
                            follower.last_seq = last_seq
                        delivered += self.messages
                        continue
            delivered += self._send_each(follower, queue_frames)
        return delivered

    def _send_each(self, follower: Follower, queue_frames: int) -> int:
        """The pass entry by entry through `follower`'s outbox (it is not up to date)."""
        delivered = 0
        outbox = follower.outbox
        codec = outbox.codec
        encoded: list[bytes] | None = None
        framed: list[bytes] | None = None
        for i, (seq, frame, about) in enumerate(self.entries):
            backlog = follower.backlog
            if about is not None:  # a join/leave notice
                if backlog is not None or follower.connection == about:
                    continue
            elif backlog is not None:
                if len(backlog) >= queue_frames:
                    outbox.overflow()  # too far behind while its history is read
                else:
                    backlog.append((seq, frame))
                continue
            elif seq and seq <= follower.last_seq:
                continue
            else:
                follower.last_seq = seq or follower.last_seq
                delivered += 1
            if encoded is None:
                encoded = self.encoded(codec)
                framed = None if codec.batched else self.framed(codec)
            outbox.push(encoded[i], None if framed is None else framed[i])
        return delivered
