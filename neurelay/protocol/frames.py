"""Frames of the Neurelay protocol: parsing what clients send, building what servers send.

`parse_client_frame` turns a decoded object into one of the typed client
frames or raises `ProtocolError` with the code docs/protocol.md gives: a
missing or misspelt field, a value of the wrong type or size, or an unknown
field is `bad_request`; an unknown `type` is `unknown_type`; a bad channel is
`invalid_channel`. The builders, of server frames (for the gateway) and of
client frames (for clients), return plain dicts ready for a codec, leaving
out fields that are None; clients read server frames with
`neurelay.protocol.server_frames`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

from neurelay.errors import ProtocolError
from neurelay.protocol.channels import Channel, parse_channel
from neurelay.protocol.codecs import check_json_value
from neurelay.protocol.codes import ErrorCode

FrameId = str | int
MAX_ID_LENGTH: Final = 128
MAX_TOKEN_LENGTH: Final = 16 * 1024
MAX_LAST: Final = 10_000
_MAX_SAFE_INT: Final = 2**53 - 1


@dataclasses.dataclass(frozen=True, slots=True)
class Authenticate:
    id: FrameId | None
    token: str


@dataclasses.dataclass(frozen=True, slots=True)
class Subscribe:
    id: FrameId | None
    channel: Channel
    since: int | None = None
    last: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: FrameId | None
    channel: Channel


@dataclasses.dataclass(frozen=True, slots=True)
class Publish:
    id: FrameId | None
    channel: Channel
    payload: Any


@dataclasses.dataclass(frozen=True, slots=True)
class Ping:
    id: FrameId | None


@dataclasses.dataclass(frozen=True, slots=True)
class Presence:
    """`presence` (who is subscribed) or, with `stats`, `presence_stats` (how many)."""

    id: FrameId | None
    channel: Channel
    stats: bool = False


ClientFrame = Authenticate | Subscribe | Unsubscribe | Publish | Ping | Presence

_FIELDS: Final[Mapping[str, frozenset[str]]] = {
    "authenticate": frozenset({"type", "id", "token"}),
    "subscribe": frozenset({"type", "id", "channel", "since", "last"}),
    "unsubscribe": frozenset({"type", "id", "channel"}),
    "publish": frozenset({"type", "id", "channel", "payload"}),
    "ping": frozenset({"type", "id"}),
    "presence": frozenset({"type", "id", "channel"}),
    "presence_stats": frozenset({"type", "id", "channel"}),
}


def parse_client_frame(obj: object) -> ClientFrame:
    """Validate a decoded client frame; raise `ProtocolError` naming what is wrong."""
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a frame must be an object")
    frame_id = _frame_id(obj.get("id"))
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'type' must be a string", frame_id=frame_id)
    allowed = _FIELDS.get(kind)
    if allowed is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE, f"unknown frame type {kind[:64]!r}", frame_id=frame_id
        )
    unknown = obj.keys() - allowed
    if unknown:
        names = ", ".join(sorted(repr(str(k)[:64]) for k in unknown)[:5])
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"unknown field(s) for {kind}: {names}", frame_id=frame_id
        )
    try:
        return _build(kind, obj, frame_id)
    except ProtocolError as e:
        e.frame_id = frame_id
        raise


def _build(kind: str, obj: dict[Any, Any], frame_id: FrameId | None) -> ClientFrame:
    if kind == "ping":
        return Ping(frame_id)
    if kind == "authenticate":
        token = obj.get("token")
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"'token' must be a string of 1 to {MAX_TOKEN_LENGTH} chars"
            )
        return Authenticate(frame_id, token)
    channel = _channel(obj)
    if kind in ("presence", "presence_stats"):
        return Presence(frame_id, channel, stats=kind == "presence_stats")
    if kind == "unsubscribe":
        return Unsubscribe(frame_id, channel)
    if kind == "publish":
        if "payload" not in obj:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, "'payload' is required", channel=channel.name
            )
        check_json_value(obj["payload"])
        return Publish(frame_id, channel, obj["payload"])
    since = _optional_int(obj, "since", minimum=0, maximum=_MAX_SAFE_INT)
    last = _optional_int(obj, "last", minimum=1, maximum=MAX_LAST)
    if since is not None and last is not None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "give 'since' or 'last', not both")
    return Subscribe(frame_id, channel, since, last)


def _frame_id(value: object) -> FrameId | None:
    if value is None:
        return None
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_SAFE_INT:
        return value
    raise ProtocolError(
        ErrorCode.BAD_REQUEST,
        f"'id' must be a string of 1 to {MAX_ID_LENGTH} chars or an integer from 0 to 2^53-1",
    )


def _channel(obj: Mapping[str, Any]) -> Channel:
    if "channel" not in obj:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'channel' is required")
    return parse_channel(obj["channel"])


def _optional_int(obj: Mapping[str, Any], key: str, *, minimum: int, maximum: int) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"'{key}' must be an integer from {minimum} to {maximum}"
        )
    return value


def _frame(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def authenticated(user: str, expires_at_ms: int, frame_id: FrameId | None) -> dict[str, Any]:
    return _frame(type="authenticated", id=frame_id, user=user, expires_at=expires_at_ms)


def subscribed(channel: str, seq: int, recovered: bool, frame_id: FrameId | None) -> dict[str, Any]:
    return _frame(type="subscribed", id=frame_id, channel=channel, seq=seq, recovered=recovered)


def unsubscribed(channel: str, frame_id: FrameId | None) -> dict[str, Any]:
    return _frame(type="unsubscribed", id=frame_id, channel=channel)


def published(
    channel: str, seq: int, frame_id: FrameId | None, *, duplicate: bool = False
) -> dict[str, Any]:
    return _frame(
        type="published", id=frame_id, channel=channel, seq=seq, duplicate=duplicate or None
    )


def message(
    channel: str, payload: Any, message_id: FrameId | None, seq: int, timestamp_ms: int
) -> dict[str, Any]:
    frame = _frame(type="message", channel=channel, id=message_id, seq=seq, timestamp=timestamp_ms)
    frame["payload"] = payload
    return frame


def error(
    code: ErrorCode, text: str, frame_id: FrameId | None = None, channel: str | None = None
) -> dict[str, Any]:
    return _frame(type="error", id=frame_id, code=code.value, message=text, channel=channel)


def error_from(exc: ProtocolError) -> dict[str, Any]:
    return error(exc.code, exc.message, exc.frame_id, exc.channel)


def pong(frame_id: FrameId | None) -> dict[str, Any]:
    return _frame(type="pong", id=frame_id)


# -- client frames, as clients build them (parse_client_frame accepts each) --------------------


def authenticate(token: str, frame_id: FrameId | None = None) -> dict[str, Any]:
    return _frame(type="authenticate", id=frame_id, token=token)


def subscribe(
    channel: str,
    frame_id: FrameId | None = None,
    *,
    since: int | None = None,
    last: int | None = None,
) -> dict[str, Any]:
    return _frame(type="subscribe", id=frame_id, channel=channel, since=since, last=last)


def unsubscribe(channel: str, frame_id: FrameId | None = None) -> dict[str, Any]:
    return _frame(type="unsubscribe", id=frame_id, channel=channel)


def publish(channel: str, payload: Any, frame_id: FrameId | None = None) -> dict[str, Any]:
    frame = _frame(type="publish", id=frame_id, channel=channel)
    frame["payload"] = payload
    return frame


def ping(frame_id: FrameId | None = None) -> dict[str, Any]:
    return _frame(type="ping", id=frame_id)


def ask_presence(
    channel: str, frame_id: FrameId | None = None, *, stats: bool = False
) -> dict[str, Any]:
    """A `presence` request, or with `stats` a `presence_stats` one."""
    return _frame(type="presence_stats" if stats else "presence", id=frame_id, channel=channel)


def presence(
    channel: str, clients: list[dict[str, Any]], truncated: bool, frame_id: FrameId | None
) -> dict[str, Any]:
    """Entries are `{"user", "connection", "info"?}`; `truncated` only when the list was cut."""
    return _frame(
        type="presence", id=frame_id, channel=channel, clients=clients, truncated=truncated or None
    )


def presence_stats(
    channel: str, users: int, connections: int, frame_id: FrameId | None
) -> dict[str, Any]:
    return _frame(
        type="presence_stats", id=frame_id, channel=channel, users=users, connections=connections
    )


def join(channel: str, client: dict[str, Any]) -> dict[str, Any]:
    return {"type": "join", "channel": channel, **client}


def leave(channel: str, client: dict[str, Any]) -> dict[str, Any]:
    return {"type": "leave", "channel": channel, **client}
