"""Gathering: asking every replica and putting their answers together, without I/O.

A cluster-wide question (a presence query or a server API command) is sent
once on a core NATS subject; every replica answers on the asker's inbox.
An answer may be larger than a NATS message, so it is cut into `parts`
(`split`) that carry the replica and their index in headers. `Gathering`
collects them and is complete when every replica the asker knows to be alive
(`Peers`) has sent all its parts; a replica that does not answer in time is
left out by the caller's deadline. `merge_*` combine the answers into the
one a client or backend receives (presence listings merge in
`presence.Listing`, as bytes). `Peers` tracks the replicas heard from
recently: one silent for the presence TTL is dead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

REPLICA_HEADER: Final = "Neurelay-Replica"
PART_HEADER: Final = "Neurelay-Part"
# Well under NATS's default max_payload (1 MiB), leaving room for headers.
PART_BYTES: Final = 256 * 1024


def split(
    body: Mapping[str, Any] | bytes, replica: str, part_bytes: int = PART_BYTES
) -> list[tuple[dict[str, str], bytes]]:
    """One replica's answer as (headers, data) messages, each at most `part_bytes` of data.

    An object is sent as JSON; bytes (an encoded `presence.Listing`) as they are.
    """
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    pieces = [data[i : i + part_bytes] for i in range(0, len(data), part_bytes)] or [b""]
    return [
        ({REPLICA_HEADER: replica, PART_HEADER: f"{index}/{len(pieces)}"}, piece)
        for index, piece in enumerate(pieces)
    ]


@dataclasses.dataclass(slots=True)
class _Parts:
    total: int
    pieces: dict[int, bytes] = dataclasses.field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.pieces) == self.total


class Gathering:
    """The answers to one question, by replica."""

    def __init__(self, expected: Iterable[str]) -> None:
        self.expected = set(expected)
        self._parts: dict[str, _Parts] = {}

    def accept(self, headers: Mapping[str, str] | None, data: bytes) -> None:
        """Take one message; malformed ones are ignored (nobody can be waited on for them)."""
        if not headers:
            return
        replica = headers.get(REPLICA_HEADER)
        index_text, _, total_text = (headers.get(PART_HEADER) or "").partition("/")
        try:
            index, total = int(index_text), int(total_text)
        except ValueError:
            return
        if replica is None or not 0 <= index < total:
            return
        # A replica we did not know is alive: wait for all of its parts too.
        self.expected.add(replica)
        parts = self._parts.setdefault(replica, _Parts(total))
        if parts.total == total:
            parts.pieces[index] = data

    def take(self, replica: str, data: bytes) -> None:
        """A whole answer that did not travel in parts (the asker's own)."""
        self.accept({REPLICA_HEADER: replica, PART_HEADER: "0/1"}, data)

    @property
    def done(self) -> bool:
        return all(r in self._parts and self._parts[r].complete for r in self.expected)

    def data(self) -> dict[str, bytes]:
        """The answer of every replica that answered completely, as it was sent."""
        return {
            replica: b"".join(parts.pieces[i] for i in range(parts.total))
            for replica, parts in self._parts.items()
            if parts.complete
        }

    def answers(self) -> dict[str, dict[str, Any]]:
        """The decoded answer of every replica that answered completely with an object."""
        found = {}
        for replica, data in self.data().items():
            try:
                body = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(body, dict):
                found[replica] = body
        return found


def merge_stats(answers: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """(users, connections); a user with connections on several replicas counts once."""
    users: set[str] = set()
    connections = 0
    for answer in answers:
        users.update(str(u) for u in answer.get("users", ()))
        connections += int(answer.get("connections", 0))
    return len(users), connections


def merge_channels(answers: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`[{"channel", "subscribers"}]` summed over replicas, by channel name."""
    totals: dict[str, int] = {}
    for answer in answers:
        channels = answer.get("channels", {})
        if isinstance(channels, dict):
            for name, count in channels.items():
                totals[str(name)] = totals.get(str(name), 0) + int(count)
    return [{"channel": name, "subscribers": totals[name]} for name in sorted(totals)]


def merge_counts(answers: Iterable[Mapping[str, Any]], field: str) -> int:
    return sum(int(answer.get(field, 0)) for answer in answers)


class Peers:
    """Replicas heard from, and when; this one is always among them."""

    def __init__(self, own: str, now: float) -> None:
        self.own = own
        self._seen: dict[str, float] = {own: now}

    def heard(self, replica: str, now: float) -> bool:
        """Note a sign of life; True if the replica was not known alive."""
        new = replica not in self._seen
        self._seen[replica] = now
        return new

    def alive(self) -> set[str]:
        return set(self._seen)

    def expire(self, now: float, ttl: float) -> list[str]:
        """Forget, and return, the replicas silent for `ttl` seconds or more."""
        self._seen[self.own] = now
        dead = sorted(r for r, seen in self._seen.items() if now - seen >= ttl)
        for replica in dead:
            del self._seen[replica]
        return dead
