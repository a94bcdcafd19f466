"""Admission: the per-user connection limit, held across every gateway replica.

Each user has one entry in the NATS key-value bucket `<prefix>_admission`, a
`UserTable` of their open connections and the replica holding each, changed
with compare-and-set so two replicas admitting the same user at once cannot
both pass the limit. Entries are written only when a connection opens or
closes. Each replica keeps one heartbeat key, `r.<replica id>`, rewritten at a
third of `connection_lease_seconds` with that lifetime as its server-side TTL;
an entry counts only while its replica's heartbeat lives. So the idle cost is
one write per replica per interval whatever the number of connections, and a
replica that dies stops counting once its heartbeat expires (within
`connection_lease_seconds`), without anyone rewriting its users' entries.
A replica that finds a dead one sweeps the tables once so its entries do not
linger for users who never come back.

A close is counted locally at once and reaches the table a little later. So
that a user who closes a connection can open another at once, a replica
admitting a user first drops that user's entries of its own it no longer holds
(closed, or abandoned mid-admission); other replicas' entries always count,
so the limit holds across replicas whatever the order of closes and opens.

Replica ids are random, so replicas whose process ids are equal (every
container's PID 1) never share connection ids. When NATS cannot be reached the
gateway admits within its own, local count, so an outage never locks users
out; once NATS is back the replica puts back any entries others dropped while
its heartbeat was gone, and retries the releases that failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Callable

import orjson

from neurelay.errors import BusError
from neurelay.gateway.bus import Bus
from neurelay.gateway.limits import UserTable
from neurelay.gateway.settings import LiveSettings

# Compare-and-set attempts on one user's entry before giving up (then: local count only).
_ATTEMPTS = 16
# Table changes in flight at once: a storm of connects or closes (thousands at once) waits
# its turn instead of sending NATS thousands of requests that then time out together.
_CONCURRENT_CHANGES = 64


def user_key(user: str) -> str:
    """A key-value key for any user id (ids may hold characters keys cannot)."""
    return "u." + hashlib.sha256(user.encode("utf-8")).hexdigest()[:40]


def heartbeat_key(replica: str) -> str:
    return f"r.{replica}"


class ConnectionRegistry:
    def __init__(
        self,
        bus: Bus,
        live: LiveSettings,
        logger: logging.Logger,
        replica: str | None = None,
    ) -> None:
        self._bus = bus
        self._live = live
        self._log = logger
        # 64 random bits: unique per process whatever its pid, stable for its lifetime.
        self.replica = replica or secrets.token_hex(8)
        self._ids = itertools.count(1)
        self._local: defaultdict[str, set[str]] = defaultdict(set)
        # Connections being admitted now, per user: their entries may be in the table already.
        self._admitting: defaultdict[str, set[str]] = defaultdict(set)
        self._unreleased: defaultdict[str, set[str]] = defaultdict(set)
        self._beat_at: float | None = None  # monotonic time of the last confirmed heartbeat
        self._sweeping: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._changes = asyncio.Semaphore(_CONCURRENT_CHANGES)

    def new_connection_id(self) -> str:
        return f"{self.replica}-{next(self._ids):x}"

    def count(self, user: str) -> int:
        return len(self._local.get(user, ()))

    async def acquire(self, user: str, connection_id: str) -> bool:
        limit = self._live.config.limits.connections_per_user
        if len(self._local.get(user, ())) >= limit:
            return False

        def admit(table: UserTable) -> bool:
            # Read when the change is applied: admissions and closes may have happened since.
            held = self._local.get(user, set()) | self._admitting.get(user, set())
            return table.admit(connection_id, self.replica, limit, held=held)

        self._admitting[user].add(connection_id)
        try:
            await self._ensure_heartbeat()
            granted = await self._change(user_key(user), admit)
        except BusError as e:
            self._log.warning("connection table unreachable, counting locally: %s", e)
            granted = True
        finally:
            admitting = self._admitting[user]
            admitting.discard(connection_id)
            if not admitting:
                del self._admitting[user]
        if granted:
            self._local[user].add(connection_id)
        return granted

    async def release(self, user: str, connection_id: str) -> None:
        local = self._local.get(user)
        if local is None or connection_id not in local:
            return
        local.discard(connection_id)
        if not local:
            del self._local[user]
        await self._release([connection_id], user)

    async def _release(self, connection_ids: list[str], user: str) -> None:
        def release(table: UserTable) -> bool:
            table.release(connection_ids)
            return True

        try:
            await self._change(user_key(user), release)
        except BusError as e:
            # The replica's heartbeat keeps the entry counting: retried by the heartbeat loop.
            self._log.warning("could not release a connection entry, will retry: %s", e)
            self._unreleased[user].update(connection_ids)

    async def renew_forever(self) -> None:
        """Write the heartbeat at a third of the lease until cancelled, and repair after outages."""
        try:
            while True:
                lease = self._live.config.limits.connection_lease_seconds
                try:
                    await self._heartbeat_and_repair(lease)
                except BusError as e:
                    self._log.warning("heartbeat failed: %s", e)
                await asyncio.sleep(lease / 3)
        finally:
            for task in self._tasks:
                task.cancel()

    async def _heartbeat_and_repair(self, lease: float) -> None:
        previous = self._beat_at
        await self._beat(lease)
        if previous is not None and time.monotonic() - previous > lease / 2:
            # Our heartbeat may have expired meanwhile and others dropped our entries.
            await self._restore()
        for user, connection_ids in list(self._unreleased.items()):
            del self._unreleased[user]
            await self._release(sorted(connection_ids), user)

    async def _ensure_heartbeat(self) -> None:
        """Entries must not be written under a heartbeat others may already see as expired."""
        lease = self._live.config.limits.connection_lease_seconds
        if self._beat_at is None or time.monotonic() - self._beat_at > lease / 2:
            await self._beat(lease)

    async def _beat(self, lease: float) -> None:
        started = time.monotonic()
        value = orjson.dumps({"at": time.time()})
        await self._bus.table_write(heartbeat_key(self.replica), value, None, ttl=lease)
        self._beat_at = started

    async def _restore(self) -> None:
        for user, connection_ids in list(self._local.items()):
            ids = set(connection_ids)

            def restore(table: UserTable, ids: set[str] = ids) -> bool:
                table.restore(ids, self.replica)
                return True

            await self._change(user_key(user), restore)

    async def _change(self, key: str, change: Callable[[UserTable], bool]) -> bool:
        """Apply `change` to the table at `key` with dead replicas' entries dropped, atomically.

        Writes only if the table changed; returns what `change` returned.
        """
        async with self._changes:
            return await self._change_now(key, change)

    async def _change_now(self, key: str, change: Callable[[UserTable], bool]) -> bool:
        lease = self._live.config.limits.connection_lease_seconds
        for _ in range(_ATTEMPTS):
            value, revision = await self._bus.table_read(key)
            table = UserTable.decode(value)
            alive = await self._alive(table.replicas())
            table.prune(alive.__contains__)
            result = change(table)
            encoded = table.encode()
            if encoded == value or (value is None and not table.entries):
                return result
            # An emptied table removes itself after a while instead of lingering forever.
            ttl = None if table.entries else lease
            if await self._bus.table_write(key, encoded, revision, ttl):
                return result
        raise BusError(f"too much contention on {key}")

    async def _alive(self, replicas: set[str]) -> set[str]:
        others = sorted(replicas - {self.replica})
        values = await asyncio.gather(
            *(self._bus.table_read(heartbeat_key(replica)) for replica in others)
        )
        alive = {self.replica}
        for replica, (value, _) in zip(others, values, strict=True):
            if value is not None:
                alive.add(replica)
            elif replica not in self._sweeping:
                self._sweeping.add(replica)
                task = asyncio.create_task(self._sweep(replica), name="neurelay-admission-sweep")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return alive

    async def _sweep(self, dead: str) -> None:
        """Drop a dead replica's entries from every table (once per replica found dead)."""
        self._log.info("replica %s is gone; sweeping its connection entries", dead)
        try:
            for key in await self._bus.table_keys("u.*"):
                await self._change(key, lambda table: True)
        except BusError as e:
            self._log.warning("sweep after replica %s stopped: %s", dead, e)
            self._sweeping.discard(dead)  # the next sighting tries again
