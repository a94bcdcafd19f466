"""HTTP API for backend services: publish with an acknowledged sequence, and read history.

Both endpoints take a bearer JWT and apply the same validation and
authorization as WebSocket frames (a publish body is checked as a `publish`
frame), answering errors as `{"code", "message"}` with a fitting status.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from neurelay.auth import Principal
from neurelay.errors import BusError, ProtocolError
from neurelay.gateway.connection import GATEWAY_KEY, bearer_token, error_response
from neurelay.gateway.hub import Hub
from neurelay.gateway.runtime import refusal
from neurelay.gateway.session import authorize_publish, authorize_subscribe
from neurelay.protocol import frames
from neurelay.protocol.channels import parse_channel
from neurelay.protocol.codes import ErrorCode

_STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.INVALID_CHANNEL: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.AUTH_FAILED: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.MESSAGE_TOO_LARGE: 413,
    ErrorCode.INTERNAL: 500,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.TOO_MANY_CONNECTIONS: 429,
    ErrorCode.UNAVAILABLE: 503,
}


def _refusal(request: web.Request, error: ProtocolError) -> web.Response:
    request.app[GATEWAY_KEY].metrics.rejections.labels(error.code.value).inc()
    return error_response(_STATUS.get(error.code, 500), error.code, error.message)


def _principal(request: web.Request) -> Principal:
    token = bearer_token(request)
    if token is None:
        raise ProtocolError(
            ErrorCode.UNAUTHENTICATED, "an 'Authorization: Bearer' token is required"
        )
    return request.app[GATEWAY_KEY].live.verifier.verify(token)


async def publish(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    limit = gateway.live.config.limits.max_message_bytes
    try:
        principal = _principal(request)
        if request.content_length is not None and request.content_length > limit:
            raise ProtocolError(ErrorCode.MESSAGE_TOO_LARGE, f"body exceeds {limit} bytes")
        body = await request.read()
        if len(body) > limit:
            raise ProtocolError(ErrorCode.MESSAGE_TOO_LARGE, f"body exceeds {limit} bytes")
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"invalid JSON: {e}") from e
        if not isinstance(decoded, dict) or "type" in decoded:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                "body must be an object with 'channel', 'payload' and optional 'id'",
            )
        frame = frames.parse_client_frame({**decoded, "type": "publish"})
        assert isinstance(frame, frames.Publish)
        authorize_publish(gateway.live, principal, frame.channel, len(body))
        seq, duplicate = await gateway.publish(
            principal.user, frame.channel, frame.payload, frame.id
        )
    except ProtocolError as e:
        return _refusal(request, e)
    return web.json_response(
        {"channel": frame.channel.name, "seq": seq, "id": frame.id, "duplicate": duplicate}
    )


async def history(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    try:
        principal = _principal(request)
        channel = parse_channel(request.match_info["channel"])
        authorize_subscribe(gateway.live, principal, channel)
        namespace = gateway.live.config.namespaces[channel.namespace]
        since = _query_int(request, "since", 0, 0, 2**53 - 1)
        depth = max(namespace.history_messages, 1)
        limit = _query_int(request, "limit", depth, 1, depth)
        if not namespace.keeps_history:
            return web.json_response(
                {"channel": channel.name, "messages": [], "recovered": False, "seq": 0}
            )
        try:
            found = await gateway.bus.history(channel, since, None, limit)
        except BusError as e:
            raise refusal(e, "history unavailable", channel) from e
    except ProtocolError as e:
        return _refusal(request, e)
    messages = [Hub.message_frame(channel, m.seq, m.data) for m in found.messages]
    return web.Response(
        body=orjson.dumps(
            {
                "channel": channel.name,
                "messages": [m for m in messages if m is not None],
                "recovered": found.recovered,
                "seq": found.last_seq,
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
