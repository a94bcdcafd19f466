"""JetStream side of a Channel: reach the gateway's NATS; create, update or delete the stream.

Connections are pooled per (URL, credentials) and never reconnect in the
background: a broken connection is dropped and the next reconcile dials
again, so "NATS unreachable" surfaces at once as `NatsUnavailable` and the
caller retries with back-off. `sync_stream` is the whole decision: create a
missing stream, leave an identical one, update a compatible one in place,
and refuse (report) an incompatible one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import tempfile
from typing import Literal

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig, StreamInfo

from neurelay.errors import BusError, BusUnavailable
from neurelay.operator.drift import StreamDrift, stream_drift

_UNAVAILABLE = (
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.StaleConnectionError,
    nats.errors.ConnectionDrainingError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
    OSError,
)


class NatsUnavailable(BusUnavailable):
    """NATS or JetStream could not be reached; retry later."""


class StreamRejected(BusError):
    """JetStream refused the stream configuration (e.g. 3 replicas on a single server)."""


Action = Literal["created", "updated", "unchanged", "incompatible"]


@dataclasses.dataclass(frozen=True)
class StreamOutcome:
    action: Action
    info: StreamInfo
    drift: StreamDrift | None = None


class NatsPool:
    """One NATS connection per (servers, credentials), dialled on demand."""

    def __init__(
        self, log: logging.Logger, *, connect_timeout: float = 3.0, request_timeout: float = 5.0
    ) -> None:
        self._log = log
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._clients: dict[tuple[str, str], Client] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def jetstream(self, url: str, credentials: bytes | None) -> JetStreamContext:
        key = (url, hashlib.sha256(credentials or b"").hexdigest())
        async with self._locks.setdefault(key, asyncio.Lock()):
            nc = self._clients.get(key)
            if nc is None or not nc.is_connected:
                if nc is not None:
                    await _close_quietly(nc)
                nc = await self._dial(url, credentials)
                self._clients[key] = nc
        return nc.jetstream(timeout=self._request_timeout)

    async def _dial(self, url: str, credentials: bytes | None) -> Client:
        creds_path = None
        if credentials is not None:
            handle, creds_path = tempfile.mkstemp(prefix="neurelay-operator-", suffix=".creds")
            with os.fdopen(handle, "wb") as f:
                f.write(credentials)

        async def on_error(error: Exception) -> None:
            self._log.debug("NATS %s: %s", url, error)

        try:
            # One attempt (nats-py reads max_reconnect_attempts=0 as "forever"), bounded.
            return await asyncio.wait_for(
                nats.connect(
                    servers=[url],
                    user_credentials=creds_path,
                    connect_timeout=self._connect_timeout,
                    allow_reconnect=False,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0.1,
                    name="neurelay-operator",
                    error_cb=on_error,
                ),
                timeout=2 * self._connect_timeout + 1,
            )
        except (*_UNAVAILABLE, nats.errors.Error) as e:
            raise NatsUnavailable(f"cannot connect to NATS at {url}: {e!r}") from e
        finally:
            if creds_path is not None:
                # The client has read the file while connecting.
                with contextlib.suppress(OSError):
                    os.unlink(creds_path)

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for nc in clients.values():
            await _close_quietly(nc)


async def _close_quietly(nc: Client) -> None:
    with contextlib.suppress(Exception):
        await nc.close()


async def stream_info(js: JetStreamContext, name: str) -> StreamInfo | None:
    try:
        return await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        return None
    except _UNAVAILABLE as e:
        raise NatsUnavailable(f"cannot read stream {name}: {e!r}") from e
    except nats.errors.Error as e:
        raise StreamRejected(f"cannot read stream {name}: {e}") from e


async def sync_stream(js: JetStreamContext, desired: StreamConfig) -> StreamOutcome:
    """Make the server's stream match `desired` where JetStream allows it."""
    name = desired.name or ""
    current = await stream_info(js, name)
    try:
        if current is None:
            return StreamOutcome("created", await js.add_stream(desired))
        drift = stream_drift(desired, current.config)
        if drift.in_sync:
            return StreamOutcome("unchanged", current)
        if not drift.compatible:
            return StreamOutcome("incompatible", current, drift)
        return StreamOutcome("updated", await js.update_stream(desired), drift)
    except _UNAVAILABLE as e:
        raise NatsUnavailable(f"cannot set up stream {name}: {e!r}") from e
    except nats.errors.Error as e:
        raise StreamRejected(f"JetStream refused stream {name}: {e}") from e


async def delete_stream(js: JetStreamContext, name: str) -> bool:
    """Delete the stream; False when it did not exist."""
    try:
        return bool(await js.delete_stream(name))
    except nats.js.errors.NotFoundError:
        return False
    except _UNAVAILABLE as e:
        raise NatsUnavailable(f"cannot delete stream {name}: {e!r}") from e
    except nats.errors.Error as e:
        raise StreamRejected(f"JetStream refused to delete stream {name}: {e}") from e
