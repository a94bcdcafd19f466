"""Presence: who is subscribed to which channel, on this replica and as seen from the others.

Pure data, no I/O. `Member` is one connection's entry in one channel
(user, connection id, the token's `info`, the replica holding it).
`LocalPresence` is this replica's truth: every subscription of every local
connection, whatever the namespace's settings, so switching `presence` on
by a reload is answered at once; it answers the queries other replicas send
(`answer`). Once a channel's presence has been asked for, each of its
entries is encoded once, in JSON and in MessagePack, and kept in order of
`order_key` with the channel's user count as members come and go, so that
answering a `presence` query of thousands of members copies bytes instead
of encoding dicts (see `Listing`). `Roster` is what this replica
has heard of the members of the channels it follows in join/leave
namespaces: it lets the replica send `leave` for the connections of a
replica that died without saying so.
`encode_events`/`decode_events` are the join/leave notices replicas publish
on a channel's live subject, those of one channel and one pass together.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

import msgpack
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


def order_key(user: str, connection: str) -> bytes:
    """Bytes that sort like `(user, connection)`: the order of `presence` entries.

    UTF-8 keeps code point order; NUL becomes 00 01 and ends the user as 00 00, so a user
    that is a prefix of another sorts first, as in Python.
    """

    def escaped(text: str) -> bytes:
        return text.encode("utf-8", "surrogatepass").replace(b"\x00", b"\x00\x01")

    return escaped(user) + b"\x00\x00" + escaped(connection)


class _Listed:
    """One channel's local members and, once asked for, their index.

    The index (entries encoded in order, users counted) is built at the first `presence`
    or `presence_stats` query on the channel and kept up to date from then on, so channels
    nobody asks about (most `user:` channels) cost neither the memory nor the encoding.
    """

    __slots__ = ("answers", "entries", "keys", "members", "users")

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}
        # The index, None until asked for.
        self.keys: list[bytes] | None = None  # sorted
        self.entries: dict[bytes, tuple[bytes, bytes]] = {}  # key → (JSON, MessagePack)
        self.users: Counter[str] = Counter()  # user digest → connections
        self.answers: dict[tuple[bool, int], bytes] = {}  # (binary, limit) → answer

    def add(self, member: Member) -> None:
        self.members[member.connection] = member
        if self.keys is not None:
            self._index(member, self.keys)
            self.answers.clear()

    def _index(self, member: Member, keys: list[bytes]) -> None:
        key = order_key(member.user, member.connection)
        entry = member.entry()
        self.entries[key] = (orjson.dumps(entry), msgpack.packb(entry, use_bin_type=True))
        bisect.insort(keys, key)
        self.users[user_digest(member.user)] += 1

    def remove(self, connection: str) -> Member | None:
        member = self.members.pop(connection, None)
        if member is None or self.keys is None:
            return member
        key = order_key(member.user, member.connection)
        del self.entries[key]
        del self.keys[bisect.bisect_left(self.keys, key)]
        digest = user_digest(member.user)
        self.users[digest] -= 1
        if not self.users[digest]:
            del self.users[digest]
        self.answers.clear()
        return member

    def indexed(self) -> list[bytes]:
        """The sorted keys, the index built first if it was not yet."""
        if self.keys is None:
            self.keys = []
            for member in self.members.values():
                self._index(member, self.keys)
        return self.keys

    def listing(self, binary: bool, limit: int) -> bytes:
        """The first `limit` entries in order, as `Listing` carries them between replicas."""
        found = self.answers.get((binary, limit))
        if found is None:
            keys = self.indexed()
            which = 1 if binary else 0
            entries = self.entries
            found = Listing.pack(len(keys), [(key, entries[key][which]) for key in keys[:limit]])
            self.answers[binary, limit] = found
        return found


class LocalPresence:
    """Every subscription of this replica's connections, by channel and by connection."""

    def __init__(self) -> None:
        self._channels: dict[str, _Listed] = {}
        self._by_connection: defaultdict[str, set[str]] = defaultdict(set)

    def add(self, channel: str, member: Member) -> bool:
        """Record a subscription; False if it was already there."""
        listed = self._channels.get(channel)
        if listed is None:
            listed = self._channels[channel] = _Listed()
        known = listed.remove(member.connection) is not None
        listed.add(member)
        self._by_connection[member.connection].add(channel)
        return not known

    def remove(self, channel: str, connection: str) -> Member | None:
        listed = self._channels.get(channel)
        if listed is None:
            return None
        member = listed.remove(connection)
        if not listed.members:
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
        listed = self._channels.get(channel)
        return [] if listed is None else list(listed.members.values())

    def count(self, channel: str) -> int:
        listed = self._channels.get(channel)
        return 0 if listed is None else len(listed.members)

    def answer(self, query: Mapping[str, Any]) -> dict[str, Any] | bytes:
        """This replica's part of a cluster-wide query (see `gathering.Query`).

        A `presence` query is answered with a `Listing` in the encoding it asks for
        (`binary`: MessagePack), the others with an object.
        """
        kind = query.get("q")
        listed = self._channels.get(str(query.get("channel")))
        if kind == "presence":
            limit = int(query.get("limit", 0))
            if listed is None:
                return Listing.pack(0, [])
            return listed.listing(bool(query.get("binary")), limit)
        if kind == "stats":
            if listed is None:
                return {"users": [], "connections": 0}
            listed.indexed()
            return {"users": list(listed.users), "connections": len(listed.members)}
        if kind == "channels":
            namespace = query.get("namespace")
            return {
                "channels": {
                    name: len(listed.members)
                    for name, listed in self._channels.items()
                    if namespace is None or name.partition(":")[0] == namespace
                }
            }
        if kind == "members":
            members = [] if listed is None else listed.members.values()
            return {"members": [m.wire() for m in members]}
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown query {str(kind)[:32]!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class Listing:
    """A `presence` answer whose entries are already encoded, in order, at most a cap of them.

    Between replicas it travels as one MessagePack array: the replica's total, then each
    entry's `order_key` and its encoded bytes, alternately. Merging the replicas' listings
    sorts keys, never entries, and the frame is built around the bytes as they came
    (`Codec.encode_with_list`).
    """

    entries: list[bytes]
    truncated: bool

    @staticmethod
    def pack(total: int, keyed: list[tuple[bytes, bytes]]) -> bytes:
        packed: bytes = msgpack.packb([total, *(part for pair in keyed for part in pair)])
        return packed

    @staticmethod
    def merge(answers: Iterable[bytes], cap: int) -> Listing:
        """Every replica's entries in order, at most `cap` of them; malformed answers left out."""
        keyed: list[tuple[bytes, bytes]] = []
        total = 0
        runs = 0
        for data in answers:
            try:
                unpacked = msgpack.unpackb(data)
            except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
                continue
            if not (
                isinstance(unpacked, list)
                and unpacked
                and isinstance(unpacked[0], int)
                and len(unpacked) % 2 == 1
                and all(isinstance(part, bytes) for part in unpacked[1:])
            ):
                continue
            total += unpacked[0]
            keyed.extend(zip(unpacked[1::2], unpacked[2::2], strict=True))
            runs += len(unpacked) > 1
        if runs > 1:
            # Each run is sorted already, which the sort finds; keys are unique (they hold
            # the connection id), so entries are never compared.
            keyed.sort()
        return Listing([entry for _, entry in keyed[:cap]], total > cap or len(keyed) > cap)


class Roster:
    """Members of followed join/leave channels as announced by every replica, this one included.

    The members other replicas held before this one followed a channel are learnt by asking
    them (`asking`, then `answered`). An answer was current when sent, but notices travel on
    another subject: a leave may be read before an answer that still lists its member. So
    while a question is open, the connections seen leaving its channel (or taken for gone
    with their replica) are remembered with it and not learnt from its answer; otherwise
    they would be members again, and leave twice.
    """

    def __init__(self) -> None:
        self._channels: dict[str, dict[str, Member]] = {}
        # Per channel, its open questions: each the connections that left since it was asked.
        self._questions: dict[str, list[set[str]]] = {}

    def follow(self, channel: str) -> None:
        self._channels.setdefault(channel, {})

    def asking(self, channel: str) -> set[str]:
        """A question about `channel`'s members is sent: pass what this returns to `answered`."""
        departed: set[str] = set()
        self._questions.setdefault(channel, []).append(departed)
        return departed

    def answered(self, channel: str, question: set[str], known: Iterable[Member]) -> list[Member]:
        """Learn the `known` members a question was answered with; returns those new to it.

        (`known` is empty for a question nobody answered.) Connections that left after the
        question was asked are not learnt.
        """
        questions = self._questions.get(channel, [])
        for index, open_question in enumerate(questions):
            if open_question is question:
                del questions[index]
                break
        if not questions:
            self._questions.pop(channel, None)
        members = self._channels.get(channel)
        if members is None:
            return []
        added = []
        for member in known:
            if member.connection not in members and member.connection not in question:
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
        self._departed(channel, connection)
        members = self._channels.get(channel)
        return None if members is None else members.pop(connection, None)

    def drop_replica(self, replica: str) -> list[tuple[str, Member]]:
        """Remove, and return, every member held by `replica` (it is gone)."""
        gone = []
        for channel, members in self._channels.items():
            for connection, member in list(members.items()):
                if member.replica == replica:
                    del members[connection]
                    self._departed(channel, connection)
                    gone.append((channel, member))
        return gone

    def _departed(self, channel: str, connection: str) -> None:
        for question in self._questions.get(channel, ()):
            question.add(connection)


def encode_events(events: Iterable[tuple[EventKind, Member]], limit: int) -> list[bytes]:
    """Notices as JSON arrays of `{"e": kind, …member}`, each at most `limit` bytes.

    (One notice larger than `limit` travels alone.) A replica sends the notices of one
    channel from one pass of its loop together, so an arrival costs no NATS message of
    its own.
    """
    batches: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for kind, member in events:
        encoded = orjson.dumps({"e": kind, **member.wire()})
        if batch and size + len(encoded) + 1 > limit:
            batches.append(b"[" + b",".join(batch) + b"]")
            batch, size = [], 0
        batch.append(encoded)
        size += len(encoded) + 1
    if batch:
        batches.append(b"[" + b",".join(batch) + b"]")
    return batches


def decode_events(data: bytes) -> list[tuple[EventKind, Member]]:
    """The notices of one message, in order (a list, or one notice alone).

    Raises ValueError for anything that is not a join/leave notice.
    """
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e}") from e
    return [_event(item) for item in (obj if isinstance(obj, list) else [obj])]


def _event(obj: object) -> tuple[EventKind, Member]:
    kind = obj.get("e") if isinstance(obj, dict) else None
    if kind == "join":
        return "join", Member.from_wire(obj)
    if kind == "leave":
        return "leave", Member.from_wire(obj)
    raise ValueError("not a join/leave notice")
