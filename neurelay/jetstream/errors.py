"""Mapping nats-py exceptions to Neurelay's: the one table behind every "retry later".

Retryable (`BusUnavailable`): no connection, no answer in time, no responder,
and JetStream's 503s, which is what a stream whose leader is being elected
answers ("no response from stream" when publishing); clients are told
`unavailable` and may retry. Everything else JetStream or NATS says is a
`BusError`: the request itself was refused and the same request would be
refused again. A message over the server's max_payload is `PayloadTooLarge`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import nats.errors
import nats.js.errors

from neurelay.errors import BusError, BusUnavailable, PayloadTooLarge

# Conditions that pass: the same request may succeed once NATS or the stream's leader is back.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.NoServersError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
    asyncio.TimeoutError,
    OSError,
)
# Everything a nats-py call is expected to raise; anything else is a bug and propagates.
NATS_ERRORS: tuple[type[BaseException], ...] = (*UNAVAILABLE, nats.errors.Error)


def bus_error(error: BaseException, what: str) -> BusError:
    """The Neurelay exception for a nats-py one; raise it `from error`."""
    if isinstance(error, nats.errors.MaxPayloadError):
        return PayloadTooLarge(f"{what}: the message exceeds the NATS server's max_payload")
    if isinstance(error, UNAVAILABLE) or (
        isinstance(error, nats.js.errors.APIError) and error.code == 503
    ):
        return BusUnavailable(f"{what}: {_describe(error)}")
    return BusError(f"{what}: {_describe(error)}")


@contextlib.contextmanager
def mapped(what: str) -> Iterator[None]:
    """Run a block of nats-py calls with their exceptions mapped by `bus_error`."""
    try:
        yield
    except NATS_ERRORS as e:
        raise bus_error(e, what) from e


def _describe(error: BaseException) -> str:
    text = str(error)
    # Several nats-py errors (and asyncio's timeout) have an empty message.
    return text if text and text != "nats: " else type(error).__name__
