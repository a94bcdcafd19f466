"""AckedPublishing: JetStream's replies read into acks or our errors; timeouts and closing."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.aio.msg import Msg

from neurelay.errors import BusError, BusUnavailable, PayloadTooLarge
from neurelay.jetstream.publishing import AckedPublishing, _outcome

pytestmark = pytest.mark.timeout(30)


def reply(data: bytes, headers: dict[str, str] | None = None) -> Msg:
    return Msg(_client=None, subject="_INBOX.x.1", data=data, headers=headers)  # type: ignore[arg-type]


def test_an_ack_gives_the_sequence_and_duplicate_flag() -> None:
    assert _outcome(reply(b'{"stream":"s","seq":42}')) == (42, False)
    assert _outcome(reply(b'{"stream":"s","seq":7,"duplicate":true}')) == (7, True)


def test_no_responders_is_unavailable() -> None:
    assert isinstance(_outcome(reply(b"", {"Status": "503"})), BusUnavailable)


def test_a_jetstream_503_is_unavailable_and_other_errors_are_not() -> None:
    unavailable = _outcome(reply(b'{"error":{"code":503,"err_code":10008,"description":"x"}}'))
    refused = _outcome(reply(b'{"error":{"code":400,"err_code":10060,"description":"bad"}}'))
    assert isinstance(unavailable, BusUnavailable)
    assert isinstance(refused, BusError)
    assert not isinstance(refused, BusUnavailable)
    assert "bad" in str(refused)


@pytest.mark.parametrize("data", [b"", b"garbage", b"[1]", b'{"stream":"s"}', b'{"seq":"x"}'])
def test_an_unreadable_reply_is_an_error_not_an_ack(data: bytes) -> None:
    outcome = _outcome(reply(data))
    assert isinstance(outcome, BusError)


async def test_a_publish_without_a_stream_fails_unavailable(shared_nats) -> None:
    nc = await nats.connect(shared_nats.url)
    publishing = AckedPublishing(nc, timeout=5.0)
    await publishing.start()
    try:
        ack = await publishing.publish("nobody.listens.here", b"x")
        with pytest.raises(BusUnavailable):
            await ack
        with pytest.raises(PayloadTooLarge):
            await publishing.publish("nobody.listens.here", b"x" * (nc.max_payload + 1))
    finally:
        await publishing.stop()
        await nc.close()


async def test_an_ack_that_never_comes_times_out_and_stop_fails_the_rest(shared_nats) -> None:
    nc = await nats.connect(shared_nats.url)
    publishing = AckedPublishing(nc, timeout=0.2)
    await publishing.start()
    # A subscriber that never answers: the request has a responder but gets no ack.
    silent = await nc.subscribe("silent.subject")
    try:
        with pytest.raises(BusUnavailable, match="no ack in time"):
            await (await publishing.publish("silent.subject", b"x"))
        publishing.timeout = 30.0
        waiting = await publishing.publish("silent.subject", b"y")
        await publishing.stop()
        with pytest.raises(BusUnavailable, match="closed"):
            await asyncio.wait_for(waiting, 5)
        assert publishing.in_flight == 0
    finally:
        await silent.unsubscribe()
        await nc.close()
