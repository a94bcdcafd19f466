"""Envelopes: the body a published message is stored under in NATS, both ways.

A message travels between replicas, and waits in a stream's history, as one
JSON object: `p` the payload, `i` the publisher's message id (or null), `t`
the gateway's receive time in milliseconds since the epoch, `u` the
publishing user. `encode` writes it; `message_frame` reads it back into the
`message` frame a subscriber gets, and is the only reader, so live delivery,
resume and the HTTP history endpoint cannot disagree about the format.
`dedup_key` is the `Nats-Msg-Id` it is published with, the same whoever
publishes (gateway or `neurelay.publisher`), so a retry is never stored twice;
it names the channel, since one stream holds every channel of a namespace.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from neurelay.protocol import frames
from neurelay.protocol.channels import Channel
from neurelay.protocol.frames import FrameId


def encode(payload: Any, message_id: FrameId | None, timestamp_ms: int, user: str) -> bytes:
    """The body stored in NATS for one published message."""
    return orjson.dumps({"p": payload, "i": message_id, "t": timestamp_ms, "u": user})


def dedup_key(user: str, channel: Channel, message_id: FrameId | None) -> str | None:
    """JetStream de-duplication id: a publisher's ids are unique per user and channel,
    not globally (the stream de-duplicates across all the channels of its namespace)."""
    if message_id is None:
        return None
    name = channel.name
    raw = f"{len(user)}:{user}:{len(name)}:{name}:{type(message_id).__name__}:{message_id}"
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def message_frame(channel: Channel, seq: int, data: bytes) -> dict[str, Any] | None:
    """The `message` frame for a stored envelope; None if someone else wrote garbage."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or "p" not in body:
        return None
    return frames.message(channel.name, body["p"], body.get("i"), seq, body.get("t", 0))
