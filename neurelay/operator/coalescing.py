"""Coalescer: asks for "reconcile this gateway" collapse into at most one running and one queued.

A gateway's children depend on its Channels, its Secrets and the children
themselves, so many events ask for the same gateway reconcile: applying
1,000 Channels at once asks 1,000 times. Each ask only marks the gateway
dirty; one task per gateway reconciles while it is dirty, each pass
waiting `settle` seconds for more asks first, so a burst costs a few
reconciles, each reading the latest state. A failed reconcile is
retried with exponential back-off, or at once when a newer ask comes first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from neurelay.errors import NeurelayError

Key = tuple[str, str]
Reconcile = Callable[[str, str], Awaitable[None]]
Log = logging.Logger | logging.LoggerAdapter[Any]


class Coalescer:
    """One reconcile loop per key, started on demand and ended when nothing is pending."""

    def __init__(
        self,
        reconcile: Reconcile,
        log: Log,
        backoff: Callable[[int], float],
        settle: float = 0.0,
    ) -> None:
        self._reconcile = reconcile
        self._log = log
        self._backoff = backoff
        self._settle = settle
        self._dirty: set[Key] = set()
        self._wake: dict[Key, asyncio.Event] = {}
        self._tasks: dict[Key, asyncio.Task[None]] = {}

    def request(self, namespace: str, name: str) -> None:
        """Reconcile (namespace, name) soon; a no-op when one is already queued."""
        key = (namespace, name)
        self._dirty.add(key)
        wake = self._wake.get(key)
        if wake is not None:
            wake.set()  # cut a retry delay short: there is news
        if key not in self._tasks:
            self._tasks[key] = asyncio.get_running_loop().create_task(
                self._run(key), name=f"reconcile {namespace}/{name}"
            )

    def pending(self) -> int:
        return len(self._tasks)

    async def _run(self, key: Key) -> None:
        failures = 0
        try:
            while key in self._dirty:
                if self._settle:
                    await asyncio.sleep(self._settle)
                self._dirty.discard(key)
                error = await self._once(key)
                if error is None:
                    failures = 0
                    continue
                # The first failure is news; the retries of the same problem are not.
                level = logging.INFO if failures == 0 else logging.DEBUG
                self._log.log(level, "RealtimeGateway %s/%s not reconciled: %s", *key, error)
                failures += 1
                if key not in self._dirty:
                    delay = self._backoff(failures - 1)
                    wake = self._wake[key] = asyncio.Event()
                    try:
                        await asyncio.wait_for(wake.wait(), delay)
                    except TimeoutError:
                        pass
                    finally:
                        del self._wake[key]
                    self._dirty.add(key)
        finally:
            del self._tasks[key]

    async def _once(self, key: Key) -> NeurelayError | None:
        """Reconcile once; the error when it failed (the reconcile reported it in status)."""
        try:
            await self._reconcile(*key)
        except NeurelayError as e:
            return e
        return None

    async def close(self) -> None:
        """Cancel every loop (the operator is stopping)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
