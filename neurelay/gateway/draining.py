"""Graceful drain: stop being ready, then close clients with 1012 spread over a period.

Spreading the closes keeps a restarting replica from sending all its clients
to the others in the same instant; each client reconnects elsewhere and
resumes from its last `seq`, so nothing is lost.
"""

from __future__ import annotations

import asyncio

from neurelay.gateway.runtime import Client, Gateway
from neurelay.protocol.codes import CloseCode


async def drain(gateway: Gateway, period_seconds: float) -> None:
    gateway.draining = True
    connections = list(gateway.connections)
    gateway.log.info(
        "draining", extra={"connections": len(connections), "period_seconds": period_seconds}
    )
    if not connections:
        return
    step = period_seconds / len(connections)

    async def close_later(delay: float, conn: Client) -> None:
        await asyncio.sleep(delay)
        await conn.close(CloseCode.SERVICE_RESTART, "draining; reconnect")

    await asyncio.gather(*(close_later(i * step, c) for i, c in enumerate(connections)))
