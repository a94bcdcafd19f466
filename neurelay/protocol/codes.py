"""Stable error codes and WebSocket close codes of the Neurelay protocol.

These strings and numbers are a public contract (docs/protocol.md lists them);
clients branch on them, so they never change meaning once released.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """The `code` of an `error` frame (and of HTTP API error bodies)."""

    BAD_REQUEST = "bad_request"
    UNKNOWN_TYPE = "unknown_type"
    UNAUTHENTICATED = "unauthenticated"
    AUTH_FAILED = "auth_failed"
    TOKEN_EXPIRED = "token_expired"
    FORBIDDEN = "forbidden"
    INVALID_CHANNEL = "invalid_channel"
    NOT_SUBSCRIBED = "not_subscribed"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    MESSAGE_TOO_LARGE = "message_too_large"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    PRESENCE_DISABLED = "presence_disabled"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the gateway uses when it ends a connection."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    AUTH_TIMEOUT = 4001
    TOO_MANY_CONNECTIONS = 4003
    SLOW_CONSUMER = 4005
    DISCONNECTED = 4008
    TOKEN_REVOKED = 4009
