"""Admission: the per-user connection limit, held across every gateway replica.

Each user has one entry in the NATS key-value bucket `<prefix>_connections`,
a `LeaseTable` of their open connections, changed with compare-and-set so two
replicas admitting the same user at once cannot both pass the limit. Leases
are renewed by a background loop; a replica that dies stops renewing and its
connections stop counting once their leases lapse. When NATS cannot be
reached the gateway still admits within its own, local count, so an outage
never locks users out.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import defaultdict

from neurelay.errors import BusError
from neurelay.gateway.bus import Bus
from neurelay.gateway.limits import LeaseTable
from neurelay.gateway.settings import LiveSettings


def user_key(user: str) -> str:
    """A key-value key for any user id (ids may hold characters keys cannot)."""
    return "u." + hashlib.sha256(user.encode("utf-8")).hexdigest()[:40]


class ConnectionRegistry:
    def __init__(self, bus: Bus, live: LiveSettings, logger: logging.Logger) -> None:
        self._bus = bus
        self._live = live
        self._log = logger
        self._local: defaultdict[str, set[str]] = defaultdict(set)

    def count(self, user: str) -> int:
        return len(self._local.get(user, ()))

    async def acquire(self, user: str, connection_id: str) -> bool:
        limits = self._live.config.limits
        if len(self._local.get(user, ())) >= limits.connections_per_user:
            return False
        granted = True

        def admit(current: bytes | None) -> bytes | None:
            nonlocal granted
            table = LeaseTable.decode(current)
            granted = table.admit(
                connection_id,
                time.time(),
                limits.connections_per_user,
                limits.connection_lease_seconds,
            )
            return table.encode() if granted else None

        try:
            await self._bus.compare_and_set(user_key(user), admit)
        except BusError as e:
            self._log.warning("connection table unreachable, counting locally: %s", e)
            granted = True
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

        def release(current: bytes | None) -> bytes | None:
            table = LeaseTable.decode(current)
            table.release([connection_id], time.time())
            return table.encode()

        try:
            await self._bus.compare_and_set(user_key(user), release)
        except BusError as e:
            self._log.debug("could not release lease (it will lapse): %s", e)

    async def renew_forever(self) -> None:
        """Renew this replica's leases at a third of their lifetime until cancelled."""
        while True:
            lease = self._live.config.limits.connection_lease_seconds
            await asyncio.sleep(lease / 3)
            for user, connection_ids in list(self._local.items()):
                ids = set(connection_ids)

                def renew(
                    current: bytes | None, ids: set[str] = ids, lease: float = lease
                ) -> bytes | None:
                    table = LeaseTable.decode(current)
                    table.renew(ids, time.time(), lease)
                    return table.encode()

                try:
                    await self._bus.compare_and_set(user_key(user), renew)
                except BusError as e:
                    self._log.warning("lease renewal failed: %s", e)
                    break
