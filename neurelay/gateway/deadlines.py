"""Deadlines: one event-loop timer for the deadlines of every connection.

A connection waits for its authentication timeout or its token's expiry,
often hours away. A timer handle each would cost every idle connection
about half a kilobyte and a place in the loop's heap; here a deadline is an
entry in a bucket of `RESOLUTION` seconds, and one timer, set for the
earliest bucket, calls `on_deadline()` of each owner whose bucket is due.
Deadlines never fire early and at most `RESOLUTION` seconds late. Times are
wall-clock seconds (`time.time()`), as the session's deadlines are.
`Heartbeat` decides, on the same timer, when to ping a quiet client and when
to give it up (aiohttp's own heartbeat costs each connection timer handles).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
import weakref
from collections.abc import Callable
from typing import Protocol

RESOLUTION = 0.25  # seconds: how late a deadline may fire, for fewer timer wake-ups


class Owner(Protocol):
    def on_deadline(self) -> None: ...


class Deadlines:
    """The deadlines of many owners on one loop timer (see the module docstring)."""

    __slots__ = ("_buckets", "_clock", "_heap", "_loop", "_timer", "_where", "resolution")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        resolution: float = RESOLUTION,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._loop = loop
        self.resolution = resolution
        self._clock = clock
        self._buckets: dict[int, set[Owner]] = {}
        self._where: dict[Owner, int] = {}
        # Bucket numbers, earliest first; a bucket emptied by `cancel` leaves its number behind.
        self._heap: list[int] = []
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._where)

    def set(self, owner: Owner, when: float | None) -> None:
        """Call `owner.on_deadline()` once `when` has passed (None: never); replaces its last."""
        if when is None:
            self.cancel(owner)
            return
        number = math.ceil(when / self.resolution)
        if self._where.get(owner) == number:
            return  # unchanged (the common case: a frame arrived, the deadline stayed)
        self.cancel(owner)
        bucket = self._buckets.get(number)
        if bucket is None:
            bucket = self._buckets[number] = set()
            heapq.heappush(self._heap, number)
            if self._heap[0] == number:
                self._arm()
        bucket.add(owner)
        self._where[owner] = number

    def cancel(self, owner: Owner) -> None:
        number = self._where.pop(owner, None)
        if number is None:
            return
        bucket = self._buckets[number]
        bucket.discard(owner)
        if not bucket:
            del self._buckets[number]
            if len(self._heap) > 2 * len(self._buckets) + 64:
                # Mostly numbers of emptied buckets: rebuild, so churn cannot grow the heap.
                self._heap = sorted(self._buckets)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._heap and self._heap[0] not in self._buckets:
            heapq.heappop(self._heap)
        if self._heap:
            delay = max(0.0, self._heap[0] * self.resolution - self._clock())
            self._timer = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._clock()
        heap = self._heap
        while heap and heap[0] * self.resolution <= now:
            due = self._buckets.pop(heapq.heappop(heap), None)
            for owner in due or ():
                del self._where[owner]
                try:
                    owner.on_deadline()
                except Exception as e:  # one owner's fault must not stop the others' deadlines
                    self._loop.call_exception_handler(
                        {"message": "deadline callback failed", "exception": e}
                    )
        self._arm()


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = (
    weakref.WeakKeyDictionary()
)


def deadlines() -> Deadlines:
    """The running loop's `Deadlines`."""
    loop = asyncio.get_running_loop()
    found = _per_loop.get(loop)
    if found is None:
        found = _per_loop[loop] = Deadlines(loop)
    return found


PING = "ping"
DEAD = "dead"


class Heartbeat:
    """When to ping a connection and when to give it up, without I/O.

    The connection's deadline includes `due`; at it, `tick` says `PING` (send a
    ping: nothing was heard from the client for `interval` seconds), `DEAD`
    (nothing came within half the interval after the ping) or None (the client
    was heard from meanwhile: `due` moved on). `heard` is all a frame costs.
    """

    __slots__ = ("_heard", "_pinged", "due", "interval")

    def __init__(self, interval: float, now: float) -> None:
        self.interval = interval
        self._heard = now
        self._pinged: float | None = None
        self.due = now + interval

    def heard(self, now: float) -> None:
        self._heard = now

    def tick(self, now: float) -> str | None:
        if now < self.due:
            return None
        if self._pinged is not None:
            if self._heard <= self._pinged:
                return DEAD
            self._pinged = None
        quiet_until = self._heard + self.interval
        if now < quiet_until:
            self.due = quiet_until
            return None
        self._pinged = now
        self.due = now + self.interval / 2
        return PING
