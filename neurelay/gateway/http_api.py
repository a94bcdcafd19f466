"""HTTP API for backend services: publish with an acknowledged sequence, and read history.

Both endpoints take a bearer JWT in the `Authorization` header (never in the
URL, where proxies and access logs keep it), count against the user's
request rate, and apply the same validation and authorization as WebSocket
frames (a publish body is checked as a `publish` frame; a JSON array of them
is a batch), answering errors as `{"code", "message"}` with a fitting status.
A publish also counts its messages against the user's message rate, and
holds room in the gateway's budget of publishes in flight from before its
body is read until its last ack; a batch goes out in windows of `WINDOW`
messages, so what it keeps in flight stays small whatever its size.
Handlers parse the request and call the `Gateway`; it raises only
`ProtocolError`, answered through `web.refusal`.
"""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from neurelay.auth import Principal
from neurelay.errors import ProtocolError
from neurelay.gateway.web import GATEWAY_KEY, bearer_token, refusal
from neurelay.protocol import frames
from neurelay.protocol.channels import parse_channel
from neurelay.protocol.codecs import JSON
from neurelay.protocol.codes import ErrorCode

# Messages one `POST /api/v1/publish` batch may hold: a bound on the work of one request.
MAX_BATCH = 1000
# Messages of one batch written before their acks are awaited (covered by the budget's
# per-request charge).
WINDOW = 64


def request_principal(request: web.Request) -> Principal:
    """The principal of the request's bearer token; ProtocolError when missing or refused."""
    if "token" in request.query:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            "the HTTP API takes no token in the URL (it would be logged): "
            "send 'Authorization: Bearer <jwt>'",
        )
    token = bearer_token(request)
    if token is None:
        raise ProtocolError(
            ErrorCode.UNAUTHENTICATED, "an 'Authorization: Bearer' token is required"
        )
    return request.app[GATEWAY_KEY].verify_request(token)


async def publish(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    limit = gateway.live.config.limits.max_message_bytes
    try:
        principal = request_principal(request)
        # Every publish holds at least one message: counted before the body is read.
        gateway.spend_publishes(principal, 1)
        if request.content_length is not None and request.content_length > limit:
            raise ProtocolError(ErrorCode.MESSAGE_TOO_LARGE, f"body exceeds {limit} bytes")
        async with gateway.http_publishing(request.content_length or limit):
            return await _publish_body(request, principal, limit)
    except ProtocolError as e:
        return refusal(gateway, e)


async def _publish_body(request: web.Request, principal: Principal, limit: int) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    body = await request.read()
    gateway.doorman.request_read(request)
    if len(body) > limit:
        raise ProtocolError(ErrorCode.MESSAGE_TOO_LARGE, f"body exceeds {limit} bytes")
    decoded, size = JSON.decode(body), len(body)
    del body  # parsed: only the messages are held from here on
    if isinstance(decoded, list):
        return await _publish_batch(request, principal, decoded)
    if not isinstance(decoded, dict) or "type" in decoded:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            "body must be an object with 'channel', 'payload' and optional 'id'",
        )
    frame = frames.parse_client_frame({**decoded, "type": "publish"})
    assert isinstance(frame, frames.Publish)
    outcome = _Outcomes(1)
    await gateway.publish_request(principal, frame, size, outcome.expect(0, frame))
    await outcome.all_told()
    if outcome.refusals[0] is not None:
        raise outcome.refusals[0]
    return _json(outcome.results[0])


async def _publish_batch(
    request: web.Request, principal: Principal, items: list[object]
) -> web.Response:
    """A JSON array of publish bodies: all checked first, then published in order, pipelined
    in windows.

    One result per message, in order: what a single publish answers, or `{"code",
    "message"}` for a message refused while publishing (retry those with the same ids).
    """
    gateway = request.app[GATEWAY_KEY]
    largest = min(MAX_BATCH, gateway.live.config.limits.http_publish_burst_messages)
    if not 1 <= len(items) <= largest:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"a batch holds 1 to {largest} messages (at most 1,000, and at most "
            "limits.http_publish_burst)",
        )
    batch = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or "type" in item:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"message {index}: an object with 'channel', 'payload' and optional 'id'",
            )
        frame = frames.parse_client_frame({**item, "type": "publish"})
        assert isinstance(frame, frames.Publish)
        batch.append((frame, len(orjson.dumps(item))))
    del items
    # The first message was counted before the body was read.
    gateway.spend_publishes(principal, len(batch) - 1)

    # Each message is written before the next, in the batch's order; a window's acks are
    # awaited together.
    results: list[dict[str, object]] = []
    for start in range(0, len(batch), WINDOW):
        window = batch[start : start + WINDOW]
        outcomes = _Outcomes(len(window))
        for index, (frame, size) in enumerate(window):
            publication = outcomes.expect(index, frame)
            try:
                await gateway.publish_request(principal, frame, size, publication)
            except ProtocolError as e:
                publication.refused(e)
        await outcomes.all_told()
        results.extend(outcomes.results)
    return _json({"results": results})


def _json(answer: object) -> web.Response:
    # orjson, not aiohttp's json.dumps: a batch's answer is a thousand small objects.
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


class _Outcome:
    """One message of a request in flight (a `runtime.Publication`)."""

    __slots__ = ("_outcomes", "channel", "index", "message_id")

    def __init__(self, outcomes: _Outcomes, index: int, frame: frames.Publish) -> None:
        self._outcomes = outcomes
        self.index = index
        self.channel = frame.channel
        self.message_id = frame.id

    def published(self, seq: int, duplicate: bool) -> None:
        result: dict[str, object] = {
            "channel": self.channel.name,
            "seq": seq,
            "id": self.message_id,
            "duplicate": duplicate,
        }
        self._outcomes.told(self.index, result, None)

    def refused(self, error: ProtocolError) -> None:
        result: dict[str, object] = {
            "channel": self.channel.name,
            "id": self.message_id,
            "code": error.code.value,
        }
        self._outcomes.told(self.index, result, error)


class _Outcomes:
    """The results of messages published together, and one future for the last of them."""

    def __init__(self, count: int) -> None:
        self.results: list[dict[str, object]] = [{}] * count
        self.refusals: list[ProtocolError | None] = [None] * count
        self._untold = count
        self._all_told = asyncio.get_running_loop().create_future()

    def expect(self, index: int, frame: frames.Publish) -> _Outcome:
        return _Outcome(self, index, frame)

    def told(self, index: int, result: dict[str, object], error: ProtocolError | None) -> None:
        if error is not None:
            result["message"] = error.message
        self.results[index] = result
        self.refusals[index] = error
        self._untold -= 1
        if self._untold == 0:
            self._all_told.set_result(None)

    async def all_told(self) -> None:
        await self._all_told


async def history(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    try:
        principal = request_principal(request)
        channel = parse_channel(request.match_info["channel"])
        depth = gateway.history_depth(principal, channel)
        since = _query_int(request, "since", 0, 0, 2**53 - 1)
        limit = _query_int(request, "limit", depth, 1, depth)
        page = await gateway.history(channel, since, limit)
    except ProtocolError as e:
        return refusal(gateway, e)
    return web.Response(
        body=orjson.dumps(
            {
                "channel": channel.name,
                "messages": page.messages,
                "recovered": page.recovered,
                "seq": page.last_seq,
            }
        ),
        content_type="application/json",
    )


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"'{name}' must be an integer from {low} to {high}"
        )
    return value
