"""Rate limiting and connection counting, as plain synchronous code.

`TokenBucket` limits the frames one connection may send. `UserTable` is the
value stored per user in the shared NATS key-value bucket: connection id →
the replica holding it. Replicas change it with compare-and-set, so the
per-user limit holds across all of them; an entry counts only while its
replica's heartbeat key lives, so a replica that dies releases its entries
without anyone rewriting them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

import orjson


class TokenBucket:
    """Allows `rate` events per second on average and `burst` at once."""

    __slots__ = ("_stamp", "_tokens")

    def __init__(self, burst: float, now: float) -> None:
        self._tokens = burst
        self._stamp = now

    def take(self, now: float, rate: float, burst: float, cost: float = 1.0) -> bool:
        """Spend `cost` tokens if there are as many (else none); `rate` and `burst` may
        change between calls."""
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(burst, self._tokens + elapsed * rate)
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False


class UserTable:
    """Connection id → replica id for one user's open connections."""

    __slots__ = ("entries",)

    def __init__(self, entries: dict[str, str] | None = None) -> None:
        self.entries = entries or {}

    @classmethod
    def decode(cls, data: bytes | None) -> UserTable:
        """Anything unreadable is an empty table: a corrupt entry must not lock a user out."""
        if not data:
            return cls()
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError:
            return cls()
        if not isinstance(raw, dict):
            return cls()
        return cls({str(k): v for k, v in raw.items() if isinstance(v, str)})

    def encode(self) -> bytes:
        return orjson.dumps(self.entries)

    def replicas(self) -> set[str]:
        return set(self.entries.values())

    def prune(self, alive: Callable[[str], bool]) -> bool:
        """Drop the entries of replicas that are not alive; True if any were dropped."""
        kept = {c: r for c, r in self.entries.items() if alive(r)}
        dropped = len(kept) != len(self.entries)
        self.entries = kept
        return dropped

    def admit(self, connection_id: str, replica: str, limit: int, *, held: Collection[str]) -> bool:
        """Add an entry unless `limit` entries exist already (a held id is always admitted).

        `held` are the connections `replica` still has open or is admitting: its other
        entries are connections already closed whose release is still on its way, so
        they are dropped first; a user who closes a connection may open another at once.
        """
        closed = [c for c, r in self.entries.items() if r == replica and c not in held]
        self.release(closed)
        if connection_id not in self.entries and len(self.entries) >= limit:
            return False
        self.entries[connection_id] = replica
        return True

    def restore(self, connection_ids: Iterable[str], replica: str) -> None:
        """Put back entries a replica still holds (after others dropped them in an outage)."""
        for connection_id in connection_ids:
            self.entries[connection_id] = replica

    def release(self, connection_ids: Iterable[str]) -> None:
        for connection_id in connection_ids:
            self.entries.pop(connection_id, None)
