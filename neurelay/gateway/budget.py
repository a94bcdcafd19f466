"""Budget: a gateway-wide allowance (bytes of HTTP publishes in flight), first come, first served.

Each `POST /api/v1/publish` takes its weight before it reads its body and
gives it back once its last message is acknowledged. A request that does not
fit waits behind those that came before it, up to a bound, and is then
refused; one heavier than the whole budget goes alone. The waiting line holds
as much again as the budget (aiohttp buffers a waiting request's body), and a
request that finds it full is refused at once. So however many clients post
at once, the bodies read, their parsed messages and the publishes they keep
in the NATS pipeline stay within the budget, and a WebSocket client's publish
never queues behind more than that. The capacity
is passed on each call: it follows a reloaded configuration.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Budget:
    __slots__ = ("_capacity", "_queued", "_waiters", "used")

    def __init__(self) -> None:
        self.used = 0
        self._capacity = 0
        self._queued = 0  # the weight of the waiting line
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for _, future in self._waiters if not future.done())

    async def take(self, weight: int, capacity: int, timeout: float) -> int | None:
        """Wait up to `timeout` seconds for `weight` (at most `capacity`); the weight taken,
        to `give` back, or None when it did not come in time or the line is full."""
        self._capacity = capacity
        weight = min(weight, capacity)
        if not self._waiters and self.used + weight <= capacity:
            self.used += weight
            return weight
        if self._queued + weight > capacity:
            return None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((weight, future))
        self._queued += weight
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._grant()  # those behind may fit now that this one has left the line
            return None
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.give(weight)  # granted as the request went away
            else:
                future.cancel()
                self._grant()
            raise
        finally:
            self._queued -= weight
        return weight

    def give(self, weight: int) -> None:
        self.used -= weight
        self._grant()

    def _grant(self) -> None:
        """Let waiters in, in order, while the next one fits (or nothing is in flight)."""
        waiters = self._waiters
        while waiters:
            weight, future = waiters[0]
            if future.done():  # it timed out or went away
                waiters.popleft()
                continue
            if self.used and self.used + weight > self._capacity:
                return
            waiters.popleft()
            self.used += weight
            future.set_result(None)
