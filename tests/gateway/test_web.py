"""The HTTP plumbing shared by the gateway's transports, and the stored message envelope."""

from __future__ import annotations

import orjson
import pytest

from neurelay.gateway import envelopes
from neurelay.gateway.web import HTTP_STATUS, error_response
from neurelay.protocol.channels import parse_channel
from neurelay.protocol.codes import ErrorCode


def test_every_error_code_has_one_http_status():
    assert set(HTTP_STATUS) == set(ErrorCode)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (ErrorCode.BAD_REQUEST, 400),
        (ErrorCode.AUTH_FAILED, 401),
        (ErrorCode.FORBIDDEN, 403),
        (ErrorCode.MESSAGE_TOO_LARGE, 413),
        (ErrorCode.RATE_LIMITED, 429),
        (ErrorCode.TOO_MANY_CONNECTIONS, 429),
        (ErrorCode.INTERNAL, 500),
        (ErrorCode.UNAVAILABLE, 503),
    ],
)
def test_an_error_response_carries_the_code_and_its_status(code, status):
    response = error_response(code, "why")
    assert response.status == status
    assert response.body is not None
    assert orjson.loads(bytes(response.body)) == {"code": code.value, "message": "why"}


def test_an_envelope_reads_back_as_the_message_frame_subscribers_get():
    channel = parse_channel("agent:1")
    data = envelopes.encode({"n": [1, None]}, "m-1", 1_700_000_000_000, "alice")
    frame = envelopes.message_frame(channel, 7, data)
    assert frame is not None
    assert (frame["channel"], frame["payload"], frame["id"], frame["seq"]) == (
        "agent:1",
        {"n": [1, None]},
        "m-1",
        7,
    )
    assert "alice" not in orjson.dumps(frame).decode()  # the publisher stays private


@pytest.mark.parametrize("data", [b"not json", b"[1]", b'{"i": 1}'])
def test_a_body_that_is_not_an_envelope_gives_no_frame(data):
    assert envelopes.message_frame(parse_channel("agent:1"), 1, data) is None
