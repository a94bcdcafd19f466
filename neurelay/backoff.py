"""Backoff: the one formula for how long Neurelay waits before retrying.

Every retry loop in the package (the gateway's JetStream set-up and gap
repair, the operator's reconcile retries, the client's reconnect) draws its
delays here: exponential from `initial_seconds`, capped at `max_seconds`,
with part of each delay random so that replicas or clients that failed
together do not retry together. The formula matches `backoffDelay` of the
browser client (clients/js/neurelay.js). The caller counts attempts and
resets the count after a success.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

# 2.0 ** 1024 overflows a float; long before that the cap applies anyway.
_MAX_EXPONENT = 64


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    initial_seconds: float
    """Delay before the first retry (attempt 0), before jitter."""

    max_seconds: float
    """Cap on every delay, so a retry loop never goes quiet for long."""

    jitter: float = 0.5
    """Random share of each delay (0 to 1): the delay is drawn from [(1 - jitter)·d, d].

    Half by default: spreads retries out while keeping at least half the delay.
    """

    def __post_init__(self) -> None:
        if not 0 < self.initial_seconds <= self.max_seconds:
            raise ValueError("back-off needs 0 < initial_seconds <= max_seconds")
        if not 0 <= self.jitter <= 1:
            raise ValueError("back-off jitter must be between 0 and 1")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number `attempt` (0-based); `rand` returns [0, 1)."""
        exponent = min(max(attempt, 0), _MAX_EXPONENT)
        ceiling = min(self.max_seconds, self.initial_seconds * 2.0**exponent)
        return ceiling * (1.0 - self.jitter * rand())
