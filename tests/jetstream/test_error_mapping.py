"""The one mapping of nats-py errors: what may be retried is `BusUnavailable`, nothing else is."""

from __future__ import annotations

import nats.errors
import nats.js.errors
import pytest

from neurelay.errors import BusError, BusUnavailable, PayloadTooLarge
from neurelay.jetstream.errors import bus_error, mapped


@pytest.mark.parametrize(
    "error",
    [
        # What a publish gets while the stream's leader is being elected.
        nats.js.errors.NoStreamResponseError(),
        nats.js.errors.ServiceUnavailableError(code=503, description="no leader"),
        nats.js.errors.APIError(code=503, description="JetStream system temporarily unavailable"),
        nats.errors.TimeoutError(),
        TimeoutError(),
        nats.errors.NoRespondersError(),
        nats.errors.ConnectionClosedError(),
        ConnectionResetError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_conditions_that_pass_are_unavailable(error: BaseException) -> None:
    mapped_error = bus_error(error, "publish failed")
    assert isinstance(mapped_error, BusUnavailable)
    assert str(mapped_error).startswith("publish failed: ")


@pytest.mark.parametrize(
    "error",
    [
        nats.js.errors.ServerError(code=500, err_code=10052, description="can not change storage"),
        nats.js.errors.BadRequestError(code=400, description="bad config"),
        nats.js.errors.NotFoundError(code=404, description="stream not found"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_refusals_are_bus_errors_not_retryable(error: BaseException) -> None:
    mapped_error = bus_error(error, "cannot set up stream s")
    assert type(mapped_error) is BusError
    assert "cannot set up stream s" in str(mapped_error)


def test_a_message_over_max_payload_is_payload_too_large() -> None:
    assert isinstance(bus_error(nats.errors.MaxPayloadError(), "publish"), PayloadTooLarge)


def test_mapped_block_chains_the_original_error() -> None:
    original = nats.js.errors.NoStreamResponseError()
    with pytest.raises(BusUnavailable) as caught, mapped("publish failed"):
        raise original
    assert caught.value.__cause__ is original
    assert "no response from stream" in str(caught.value)


def test_mapped_block_lets_unexpected_errors_through() -> None:
    with pytest.raises(KeyError), mapped("anything"):
        raise KeyError("a bug, not a NATS condition")
