"""Server frames as a client reads them: typed, checked, forward compatible.

`parse_server_frame` turns a decoded object from the gateway into one of the
frame types below, so a client branches on types rather than on strings. A
frame of a type this version does not know is skipped (None) and unknown
fields are ignored, so a newer gateway can add either; a known frame with a
missing or mistyped field raises `ProtocolError(bad_request)`. An `error`
frame's code is an `ErrorCode` when this version knows it, else the string
sent. The gateway builds these frames with the builders of
`neurelay.protocol.frames`; tests/protocol/test_server_frames.py proves the
two agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Final

from neurelay.errors import ProtocolError
from neurelay.protocol.codes import ErrorCode
from neurelay.protocol.frames import FrameId

_REQUIRED: Final = object()


@dataclasses.dataclass(frozen=True, slots=True)
class Authenticated:
    user: str
    expires_at: int
    id: FrameId | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Subscribed:
    channel: str
    seq: int
    recovered: bool
    id: FrameId | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Unsubscribed:
    channel: str
    id: FrameId | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Published:
    """The gateway stored a publish (`duplicate`: it had stored this id before)."""

    channel: str
    seq: int
    duplicate: bool = False
    id: FrameId | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """A message of a channel; `id` is the publisher's, `timestamp` in ms since the epoch."""

    channel: str
    payload: Any
    seq: int
    id: FrameId | None
    timestamp: int


@dataclasses.dataclass(frozen=True, slots=True)
class Error:
    code: ErrorCode | str
    message: str
    id: FrameId | None = None
    channel: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Pong:
    id: FrameId | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    """One connection in a channel's presence; `info` is its token's `info` claim."""

    user: str
    connection: str
    info: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Presence:
    """Who is subscribed to `channel`, on every replica; `truncated` when the list was cut."""

    channel: str
    clients: tuple[Member, ...]
    truncated: bool = False
    id: FrameId | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class PresenceStats:
    channel: str
    users: int
    connections: int
    id: FrameId | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Join:
    """Another connection subscribed to `channel`."""

    channel: str
    member: Member


@dataclasses.dataclass(frozen=True, slots=True)
class Leave:
    """A connection left `channel`: it unsubscribed, disconnected, or its replica died."""

    channel: str
    member: Member


ServerFrame = (
    Authenticated
    | Subscribed
    | Unsubscribed
    | Published
    | Message
    | Error
    | Pong
    | Presence
    | PresenceStats
    | Join
    | Leave
)


def parse_server_frame(obj: object) -> ServerFrame | None:
    """The typed frame for a decoded server frame; None for a type this version does not know."""
    if not isinstance(obj, Mapping):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a server frame must be an object")
    kind = obj.get("type")
    build = _BUILDERS.get(kind) if isinstance(kind, str) else None
    if build is None:
        return None
    try:
        return build(_Fields(obj))
    except ProtocolError as e:
        raise ProtocolError(e.code, f"{kind} frame: {e.message}") from None


class _Fields:
    """Typed access to a frame's fields; every failure is `bad_request` naming the field."""

    def __init__(self, obj: Mapping[Any, Any]) -> None:
        self._obj = obj

    def _get(self, key: str, valid: Callable[[object], bool], default: Any) -> Any:
        value = self._obj.get(key)
        if value is None:
            if default is _REQUIRED:
                raise ProtocolError(ErrorCode.BAD_REQUEST, f"'{key}' is required")
            return default
        if not valid(value):
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"'{key}' has the wrong type")
        return value

    def text(self, key: str) -> str:
        return str(self._get(key, _is_text, _REQUIRED))

    def optional_text(self, key: str) -> str | None:
        value = self._get(key, _is_text, None)
        return None if value is None else str(value)

    def integer(self, key: str, default: object = _REQUIRED) -> int:
        return int(self._get(key, _is_integer, default))

    def flag(self, key: str, default: bool) -> bool:
        return bool(self._get(key, _is_flag, default))

    def id(self) -> FrameId | None:
        value = self._get("id", lambda v: _is_text(v) or _is_integer(v), None)
        return value if isinstance(value, str | int) else None

    def info(self) -> Mapping[str, Any] | None:
        value = self._get("info", lambda v: isinstance(v, Mapping), None)
        return value if isinstance(value, Mapping) else None

    def member(self) -> Member:
        return Member(self.text("user"), self.text("connection"), self.info())

    def members(self) -> tuple[Member, ...]:
        listed = self._get("clients", lambda v: isinstance(v, list), _REQUIRED)
        found = []
        for entry in listed:
            if not isinstance(entry, Mapping):
                raise ProtocolError(ErrorCode.BAD_REQUEST, "'clients' holds a non-object")
            found.append(_Fields(entry).member())
        return tuple(found)

    def payload(self) -> Any:
        if "payload" not in self._obj:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "'payload' is required")
        return self._obj["payload"]


def _is_text(value: object) -> bool:
    return isinstance(value, str)


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_flag(value: object) -> bool:
    return isinstance(value, bool)


def _error_code(text: str) -> ErrorCode | str:
    try:
        return ErrorCode(text)
    except ValueError:
        return text


_BUILDERS: Final[Mapping[str, Callable[[_Fields], ServerFrame]]] = {
    "authenticated": lambda f: Authenticated(f.text("user"), f.integer("expires_at"), f.id()),
    "subscribed": lambda f: Subscribed(
        f.text("channel"), f.integer("seq", 0), f.flag("recovered", True), f.id()
    ),
    "unsubscribed": lambda f: Unsubscribed(f.text("channel"), f.id()),
    "published": lambda f: Published(
        f.text("channel"), f.integer("seq", 0), f.flag("duplicate", False), f.id()
    ),
    "message": lambda f: Message(
        f.text("channel"), f.payload(), f.integer("seq", 0), f.id(), f.integer("timestamp", 0)
    ),
    "error": lambda f: Error(
        _error_code(f.text("code")), f.text("message"), f.id(), f.optional_text("channel")
    ),
    "pong": lambda f: Pong(f.id()),
    "presence": lambda f: Presence(
        f.text("channel"), f.members(), f.flag("truncated", False), f.id()
    ),
    "presence_stats": lambda f: PresenceStats(
        f.text("channel"), f.integer("users"), f.integer("connections"), f.id()
    ),
    "join": lambda f: Join(f.text("channel"), f.member()),
    "leave": lambda f: Leave(f.text("channel"), f.member()),
}
