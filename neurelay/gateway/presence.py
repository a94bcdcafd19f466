"""Presence: who is subscribed to which channel, on this replica and as seen from the others.

Pure data, no I/O. `Member` is one connection's entry in one channel
(user, connection id, the token's `info`, the replica holding it).
`LocalPresence` is this replica's truth: every subscription of every local
connection, whatever the namespace's settings, so switching `presence` on
by a reload is answered at once; it answers the queries other replicas send
(`answer`). `Roster` is what this replica has heard of the members of the
channels it follows in join/leave namespaces: it lets the replica send
`leave` for the connections of a replica that died without saying so.
`encode_event`/`decode_event` are the join/leave notices replicas publish on
a channel's live subject.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

import orjson

from neurelay.errors import ProtocolError
from neurelay.protocol.codes import ErrorCode

EVENT_HEADER: Final = "Neurelay-Event"
EventKind = Literal["join", "leave"]


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    """One connection subscribed to one channel."""

    user: str
    connection: str
    replica: str
    info: Mapping[str, Any] | None = None

    def entry(self) -> dict[str, Any]:
        """The client-facing form: `{"user", "connection", "info"?}`."""
        found: dict[str, Any] = {"user": self.user, "connection": self.connection}
        if self.info is not None:
            found["info"] = self.info
        return found

    def wire(self) -> dict[str, Any]:
        return {"u": self.user, "c": self.connection, "r": self.replica, "i": self.info}

    @staticmethod
    def from_wire(obj: object) -> Member:
        if not isinstance(obj, dict):
            raise ValueError("a member must be an object")
        user, connection, replica = obj.get("u"), obj.get("c"), obj.get("r")
        info = obj.get("i")
        if not (isinstance(user, str) and isinstance(connection, str) and isinstance(replica, str)):
            raise ValueError("a member needs string 'u', 'c' and 'r'")
        if info is not None and not isinstance(info, dict):
            raise ValueError("a member's 'i' must be an object")
        return Member(user, connection, replica, info)


def user_digest(user: str) -> str:
    """A short, fixed-size stand-in for a user id, so counting users costs little to ship."""
    return hashlib.blake2b(user.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


class LocalPresence:
    """Every subscription of this replica's connections, by channel and by connection."""

    def __init__(self) -> None:
        self._channels: dict[str, dict[str, Member]] = {}
        self._by_connection: defaultdict[str, set[str]] = defaultdict(set)

    def add(self, channel: str, member: Member) -> bool:
        """Record a subscription; False if it was already there."""
        members = self._channels.setdefault(channel, {})
        known = member.connection in members
        members[member.connection] = member
        self._by_connection[member.connection].add(channel)
        return not known

    def remove(self, channel: str, connection: str) -> Member | None:
        members = self._channels.get(channel)
        if members is None:
            return None
        member = members.pop(connection, None)
        if not members:
            del self._channels[channel]
        channels = self._by_connection.get(connection)
        if channels is not None:
            channels.discard(channel)
            if not channels:
                del self._by_connection[connection]
        return member

    def remove_connection(self, connection: str) -> list[tuple[str, Member]]:
        """Forget a closed connection; returns the (channel, member) entries it had."""
        gone = []
        for channel in sorted(self._by_connection.get(connection, ())):
            member = self.remove(channel, connection)
            if member is not None:
                gone.append((channel, member))
        return gone

    def members(self, channel: str) -> list[Member]:
        return list(self._channels.get(channel, {}).values())

    def count(self, channel: str) -> int:
        return len(self._channels.get(channel, ()))

    def answer(self, query: Mapping[str, Any]) -> dict[str, Any]:
        """This replica's part of a cluster-wide query (see `gathering.Query`)."""
        kind = query.get("q")
        if kind == "presence":
            channel, limit = str(query.get("channel")), int(query.get("limit", 0))
            members = self._channels.get(channel, {})
            # Sorted so that the entries kept under the cap are the same on every call.
            chosen = sorted(members)[:limit]
            return {"clients": [members[c].entry() for c in chosen], "total": len(members)}
        if kind == "stats":
            members = self._channels.get(str(query.get("channel")), {})
            users = sorted({user_digest(m.user) for m in members.values()})
            return {"users": users, "connections": len(members)}
        if kind == "channels":
            namespace = query.get("namespace")
            return {
                "channels": {
                    name: len(members)
                    for name, members in self._channels.items()
                    if namespace is None or name.partition(":")[0] == namespace
                }
            }
        if kind == "members":
            members = self._channels.get(str(query.get("channel")), {})
            return {"members": [m.wire() for m in members.values()]}
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown query {str(kind)[:32]!r}")


class Roster:
    """Members of followed join/leave channels as announced by every replica, this one included."""

    def __init__(self) -> None:
        self._channels: dict[str, dict[str, Member]] = {}

    def follow(self, channel: str, known: Iterable[Member] = ()) -> list[Member]:
        """Follow `channel` (if not yet) and learn `known` members; returns those new to it."""
        members = self._channels.setdefault(channel, {})
        added = []
        for member in known:
            if member.connection not in members:
                members[member.connection] = member
                added.append(member)
        return added

    def forget(self, channel: str) -> None:
        self._channels.pop(channel, None)

    def following(self, channel: str) -> bool:
        return channel in self._channels

    def joined(self, channel: str, member: Member) -> None:
        members = self._channels.get(channel)
        if members is not None:
            members[member.connection] = member

    def left(self, channel: str, connection: str) -> Member | None:
        members = self._channels.get(channel)
        return None if members is None else members.pop(connection, None)

    def drop_replica(self, replica: str) -> list[tuple[str, Member]]:
        """Remove, and return, every member held by `replica` (it is gone)."""
        gone = []
        for channel, members in self._channels.items():
            for connection, member in list(members.items()):
                if member.replica == replica:
                    del members[connection]
                    gone.append((channel, member))
        return gone


def encode_event(kind: EventKind, member: Member) -> bytes:
    return orjson.dumps({"e": kind, **member.wire()})


def decode_event(data: bytes) -> tuple[EventKind, Member]:
    """Raises ValueError for anything that is not a join/leave notice."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e}") from e
    kind = obj.get("e") if isinstance(obj, dict) else None
    if kind == "join":
        return "join", Member.from_wire(obj)
    if kind == "leave":
        return "leave", Member.from_wire(obj)
    raise ValueError("not a join/leave notice")
