"""Permissions: who may read, publish to or see the members of a channel.

The rules of docs/protocol.md about channels, decided from the principal's
claims and the namespace's live settings, without I/O: the WebSocket session
and the `Gateway` (for the HTTP API) ask the same functions, so a rule
cannot differ between transports. Each raises `ProtocolError` with the code
the client gets (`invalid_channel`, `forbidden`, `presence_disabled`,
`message_too_large`).
"""

from __future__ import annotations

from neurelay import auth
from neurelay.config import NamespaceSettings
from neurelay.errors import ProtocolError
from neurelay.gateway.settings import LiveSettings
from neurelay.protocol.channels import Channel
from neurelay.protocol.codes import ErrorCode


def _known_namespace(live: LiveSettings, channel: Channel) -> NamespaceSettings:
    namespace = live.config.namespaces.get(channel.namespace)
    if namespace is None:
        raise ProtocolError(
            ErrorCode.INVALID_CHANNEL,
            f"unknown namespace {channel.namespace!r}",
            channel=channel.name,
        )
    return namespace


def authorize_subscribe(live: LiveSettings, principal: auth.Principal, channel: Channel) -> None:
    """Raise ProtocolError unless `principal` may read `channel` (WebSocket and HTTP alike)."""
    namespace = _known_namespace(live, channel)
    if not auth.may_subscribe(principal, channel, namespace.subscribe):
        raise ProtocolError(
            ErrorCode.FORBIDDEN, "not allowed to subscribe to this channel", channel=channel.name
        )


def authorize_presence(live: LiveSettings, principal: auth.Principal, channel: Channel) -> None:
    """Raise ProtocolError unless `principal` may see who is in `channel`."""
    authorize_subscribe(live, principal, channel)
    require_presence(live, channel)


def require_presence(live: LiveSettings, channel: Channel) -> None:
    """Raise ProtocolError(presence_disabled) unless the channel's namespace has presence on."""
    if not _known_namespace(live, channel).presence:
        raise ProtocolError(
            ErrorCode.PRESENCE_DISABLED,
            f"presence is off for namespace {channel.namespace}",
            channel=channel.name,
        )


def authorize_publish(
    live: LiveSettings, principal: auth.Principal, channel: Channel, size: int
) -> None:
    """Raise ProtocolError unless `principal` may publish `size` bytes to `channel`."""
    namespace = _known_namespace(live, channel)
    if not auth.may_publish(principal, channel, namespace.publish):
        raise ProtocolError(
            ErrorCode.FORBIDDEN, "not allowed to publish to this channel", channel=channel.name
        )
    limit = namespace.max_message_bytes
    if limit is not None and size > limit:
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LARGE,
            f"namespace {channel.namespace} takes frames up to {limit} bytes",
            channel=channel.name,
        )
