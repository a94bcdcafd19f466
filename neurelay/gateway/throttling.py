"""Throttling: the per-user rates of the HTTP API, as plain synchronous code.

Each user (the verified token's subject) has a `TokenBucket` per rate (one
for requests, one for messages published, where a batch costs its number of
messages); a request that finds too few tokens is refused with
`rate_limited` (HTTP 429). The limit is per
gateway replica. A bucket untouched for long enough to refill completely is
the same as a new one, so such buckets are forgotten: memory follows the
users active in the last few seconds, never every user ever seen.
"""

from __future__ import annotations

from collections import OrderedDict

from neurelay.gateway.limits import TokenBucket


class RequestThrottle:
    """Token buckets by user, least recently used first."""

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        self._buckets: OrderedDict[str, tuple[TokenBucket, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, user: str, now: float, rate: float, burst: float, cost: int = 1) -> bool:
        """Spend `cost` of `user`'s requests (or messages); False when as many are not left."""
        self._forget_refilled(now, burst / rate)
        entry = self._buckets.pop(user, None)
        bucket = entry[0] if entry is not None else TokenBucket(burst, now)
        self._buckets[user] = (bucket, now)
        return bucket.take(now, rate, burst, cost)

    def _forget_refilled(self, now: float, refill_seconds: float) -> None:
        while self._buckets:
            user, (_, seen) = next(iter(self._buckets.items()))
            if now - seen < refill_seconds:
                return
            del self._buckets[user]
