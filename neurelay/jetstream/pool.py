"""Pool: the operator's connections to the NATS servers its gateways use, dialled on demand.

Connections are pooled per (URL, credentials) and never reconnect in the
background: a broken connection is dropped and the next reconcile dials
again, so "NATS unreachable" surfaces at once as `BusUnavailable` and the
caller retries with back-off. Credentials are written to a private
temporary file for the moment of dialling only (nats-py reads them from a
file), and remembered in memory by where they came from, so that a stream
can still be deleted after its credentials Secret was deleted with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from neurelay.errors import BusUnavailable
from neurelay.jetstream.errors import NATS_ERRORS


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
        self._credentials: dict[tuple[str, ...], bytes] = {}

    def remember(self, source: tuple[str, ...], credentials: bytes) -> None:
        """Keep the credentials read from `source` (e.g. a Secret key) for `remembered`."""
        self._credentials[source] = credentials

    def remembered(self, source: tuple[str, ...]) -> bytes | None:
        """The credentials last read from `source` by this process, if any.

        For cleaning up after the source is gone (a Secret deleted together
        with the objects that used it); never a substitute for reading it.
        """
        return self._credentials.get(source)

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
        except NATS_ERRORS as e:
            # Whatever the reason (refused, bad credentials), nothing was reached: retry later.
            raise BusUnavailable(f"cannot connect to NATS at {url}: {e!r}") from e
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
