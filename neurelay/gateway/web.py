"""Web: the HTTP plumbing every transport of the gateway shares.

The application key under which handlers find the `Gateway`, how a bearer
token is taken from a request, whether a request's `Origin` may open a
WebSocket, and the one table from protocol error codes to HTTP statuses with
the `{"code", "message"}` body every HTTP refusal is answered with. Nothing
here knows about NATS: handlers call the `Gateway`, which raises only
`ProtocolError`, and answer it with `refusal`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from neurelay.errors import ProtocolError
from neurelay.gateway import origins
from neurelay.gateway.runtime import Gateway
from neurelay.protocol.codes import ErrorCode

GATEWAY_KEY = web.AppKey("gateway", Gateway)

HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNKNOWN_TYPE: 400,
    ErrorCode.INVALID_CHANNEL: 400,
    ErrorCode.NOT_SUBSCRIBED: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.AUTH_FAILED: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.PRESENCE_DISABLED: 409,
    ErrorCode.MESSAGE_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.TOO_MANY_CONNECTIONS: 429,
    ErrorCode.TOO_MANY_SUBSCRIPTIONS: 429,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAVAILABLE: 503,
}


def error_response(code: ErrorCode, message: str) -> web.Response:
    """The HTTP answer for a refusal with `code`: its status and `{"code", "message"}`."""
    return web.json_response({"code": code.value, "message": message}, status=HTTP_STATUS[code])


def refusal(gateway: Gateway, error: ProtocolError) -> web.Response:
    """Count a refused request and answer it."""
    gateway.metrics.rejections.labels(error.code.value).inc()
    return error_response(error.code, error.message)


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token") or None


def origin_allowed(request: web.Request, allowed: list[str]) -> bool:
    """Same-origin (the Origin's host and port are the Host header's), or allowed by pattern."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origins.parse_origin(origin) is not None and urlsplit(origin).netloc.lower() == (
        request.host.lower()
    ):
        return True
    return origins.allowed(origin, allowed)
