"""Rate limiting and connection counting, as plain synchronous code.

`TokenBucket` limits the frames one connection may send. `LeaseTable` is the
value stored per user in the shared NATS key-value bucket: connection id →
lease expiry. Replicas change it with compare-and-set, so the per-user limit
holds across all of them, and a replica that dies leaves entries that simply
expire.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson


class TokenBucket:
    """Allows `rate` events per second on average and `burst` at once."""

    __slots__ = ("_stamp", "_tokens")

    def __init__(self, burst: float, now: float) -> None:
        self._tokens = burst
        self._stamp = now

    def take(self, now: float, rate: float, burst: float) -> bool:
        """Spend one token if there is one; `rate` and `burst` may change between calls."""
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(burst, self._tokens + elapsed * rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class LeaseTable:
    """Connection id → lease expiry (seconds since the epoch) for one user."""

    __slots__ = ("leases",)

    def __init__(self, leases: dict[str, float] | None = None) -> None:
        self.leases = leases or {}

    @classmethod
    def decode(cls, data: bytes | None) -> LeaseTable:
        if not data:
            return cls()
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError:
            return cls()
        if not isinstance(raw, dict):
            return cls()
        return cls({str(k): float(v) for k, v in raw.items() if isinstance(v, (int, float))})

    def encode(self) -> bytes:
        return orjson.dumps(self.leases)

    def prune(self, now: float) -> None:
        self.leases = {k: v for k, v in self.leases.items() if v > now}

    def admit(self, connection_id: str, now: float, limit: int, lease_seconds: float) -> bool:
        """Add a lease unless `limit` live leases exist already (a renewal always succeeds)."""
        self.prune(now)
        if connection_id not in self.leases and len(self.leases) >= limit:
            return False
        self.leases[connection_id] = now + lease_seconds
        return True

    def renew(self, connection_ids: Iterable[str], now: float, lease_seconds: float) -> None:
        self.prune(now)
        for connection_id in connection_ids:
            self.leases[connection_id] = now + lease_seconds

    def release(self, connection_ids: Iterable[str], now: float) -> None:
        self.prune(now)
        for connection_id in connection_ids:
            self.leases.pop(connection_id, None)
