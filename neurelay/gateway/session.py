"""Session: one client connection's protocol state machine, without I/O.

The connection pump feeds it frames (`receive`), the passing of time (`tick`)
and the outcome of the I/O it asked for (`admitted`, `subscription_failed`);
it answers with actions: frames to send, a close, or work for the pump
(admit a user against the connection limit, start or stop a subscription,
publish a message, ask who is present). The server API acts on a session
through `unsubscribed_by_server`, `disconnected_by_server` and
`revoked_before`. Every rule of docs/protocol.md about what a client may
send, when and how much, is decided here and tested synchronously.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from neurelay import auth
from neurelay.errors import ProtocolError
from neurelay.gateway.limits import TokenBucket
from neurelay.gateway.permissions import authorize_presence, authorize_publish, authorize_subscribe
from neurelay.gateway.settings import LiveSettings
from neurelay.protocol import frames
from neurelay.protocol.channels import Channel
from neurelay.protocol.codecs import Codec
from neurelay.protocol.codes import CloseCode, ErrorCode
from neurelay.protocol.frames import FrameId


@dataclasses.dataclass(frozen=True, slots=True)
class Send:
    frame: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Close:
    code: CloseCode
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Admit:
    """Count this connection against the user's limit, then call `Session.admitted`."""

    principal: auth.Principal
    frame_id: FrameId | None


@dataclasses.dataclass(frozen=True, slots=True)
class StartSubscription:
    channel: Channel
    since: int | None
    last: int | None
    frame_id: FrameId | None


@dataclasses.dataclass(frozen=True, slots=True)
class StopSubscription:
    channel: Channel
    frame_id: FrameId | None
    reply: bool


@dataclasses.dataclass(frozen=True, slots=True)
class PublishMessage:
    channel: Channel
    payload: Any
    frame_id: FrameId | None


@dataclasses.dataclass(frozen=True, slots=True)
class QueryPresence:
    """Ask every replica who is subscribed to `channel` (or, with `stats`, how many)."""

    channel: Channel
    stats: bool
    frame_id: FrameId | None


Action = (
    Send | Close | Admit | StartSubscription | StopSubscription | PublishMessage | QueryPresence
)


class Phase(enum.Enum):
    AWAITING_AUTH = "awaiting_auth"
    ACTIVE = "active"
    EXPIRED = "expired"


class Session:
    """Protocol state of one connection; see the module docstring."""

    __slots__ = (
        "_bucket",
        "auth_deadline",
        "codec",
        "connection_id",
        "live",
        "phase",
        "principal",
        "subscriptions",
    )

    def __init__(self, connection_id: str, codec: Codec, live: LiveSettings, now: float) -> None:
        limits = live.config.limits
        self.connection_id = connection_id
        self.codec = codec
        self.live = live
        self.phase = Phase.AWAITING_AUTH
        self.principal: auth.Principal | None = None
        self.subscriptions: dict[str, Channel] = {}
        self.auth_deadline: float | None = now + limits.auth_timeout_seconds
        self._bucket = TokenBucket(limits.burst or max(1.0, limits.messages_per_second), now)

    # -- input -------------------------------------------------------------------------------

    def authenticate_at_upgrade(self, token: str) -> Admit:
        """Verify a token given with the HTTP upgrade; raises ProtocolError (answer 401)."""
        return Admit(self.live.verify(token), None)

    def receive(self, data: bytes | str, now: float) -> list[Action]:
        """Handle one client frame."""
        limits = self.live.config.limits
        # Counted before anything else, so a flood of frames, valid or not, costs no parsing.
        burst = limits.burst or max(1.0, limits.messages_per_second)
        if not self._bucket.take(now, limits.messages_per_second, burst):
            return [
                _error(
                    ErrorCode.RATE_LIMITED,
                    f"more than {limits.messages_per_second:g} frames per second; frame dropped",
                )
            ]
        size = _byte_length(data)
        if size > limits.max_message_bytes:
            return [
                _error(
                    ErrorCode.MESSAGE_TOO_LARGE,
                    f"frame of {size} bytes exceeds max_message_bytes={limits.max_message_bytes}",
                )
            ]
        try:
            frame = frames.parse_client_frame(self.codec.decode(data))
        except ProtocolError as e:
            return [Send(frames.error_from(e))]
        # Expiry noticed on a frame is announced as it would be by `tick`, then the frame
        # is answered (refused with token_expired unless it is authenticate or ping).
        notices = self.tick(now) if self.phase is Phase.ACTIVE else []
        try:
            return notices + self._dispatch(frame, size)
        except ProtocolError as e:
            if e.frame_id is None:
                e.frame_id = frame.id
            return [*notices, Send(frames.error_from(e))]

    def admitted(
        self,
        principal: auth.Principal,
        granted: bool,
        frame_id: FrameId | None,
    ) -> list[Action]:
        """The outcome of an `Admit` action."""
        if not granted:
            limit = self.live.config.limits.connections_per_user
            return [
                _error(
                    ErrorCode.TOO_MANY_CONNECTIONS,
                    f"user already holds {limit} connections",
                    frame_id,
                ),
                Close(CloseCode.TOO_MANY_CONNECTIONS, "too many connections"),
            ]
        self.principal = principal
        self.phase = Phase.ACTIVE
        self.auth_deadline = None
        return [Send(frames.authenticated(principal.user, principal.expires_at_ms, frame_id))]

    def subscription_failed(self, channel: Channel) -> None:
        self.subscriptions.pop(channel.name, None)

    # -- the server API ----------------------------------------------------------------------

    def unsubscribed_by_server(self, channel: Channel) -> list[Action]:
        """A backend ended this connection's subscription; nothing if it had none."""
        if self.subscriptions.pop(channel.name, None) is None:
            return []
        return [StopSubscription(channel, None, reply=True)]

    def disconnected_by_server(self) -> list[Action]:
        return [Close(CloseCode.DISCONNECTED, "disconnected by the server")]

    def revoked_before(self, issued_before_ms: int) -> list[Action]:
        """Close the connection if its token was issued before the cut-off."""
        if self.principal is None:
            return []
        if not auth.issued_before(self.principal, issued_before_ms):
            return []
        return [Close(CloseCode.TOKEN_REVOKED, "token revoked")]

    def tick(self, now: float) -> list[Action]:
        """Apply deadlines: authentication timeout and token expiry."""
        if self.auth_deadline is not None and now >= self.auth_deadline:
            return [Close(CloseCode.AUTH_TIMEOUT, "authentication timeout")]
        if self.phase is Phase.ACTIVE and self.principal and now >= self.principal.expires_at:
            return [self._expire(now)]
        return []

    def next_deadline(self) -> float | None:
        """When `tick` must run next, or None."""
        if self.auth_deadline is not None:
            return self.auth_deadline
        if self.phase is Phase.ACTIVE and self.principal is not None:
            return self.principal.expires_at
        return None

    # -- dispatch ----------------------------------------------------------------------------

    def _dispatch(self, frame: frames.ClientFrame, size: int) -> list[Action]:
        if isinstance(frame, frames.Ping):
            return [Send(frames.pong(frame.id))]
        if isinstance(frame, frames.Authenticate):
            return self._authenticate(frame)
        principal = self._require_principal()
        if isinstance(frame, frames.Subscribe):
            return self._subscribe(principal, frame)
        if isinstance(frame, frames.Unsubscribe):
            if self.subscriptions.pop(frame.channel.name, None) is None:
                raise ProtocolError(
                    ErrorCode.NOT_SUBSCRIBED,
                    "not subscribed to this channel",
                    channel=frame.channel.name,
                )
            return [StopSubscription(frame.channel, frame.id, reply=True)]
        if isinstance(frame, frames.Presence):
            authorize_presence(self.live, principal, frame.channel)
            return [QueryPresence(frame.channel, frame.stats, frame.id)]
        return self._publish(principal, frame, size)

    def _authenticate(self, frame: frames.Authenticate) -> list[Action]:
        principal = self.live.verify(frame.token)
        if self.principal is None:
            return [Admit(principal, frame.id)]
        if principal.user != self.principal.user:
            raise ProtocolError(
                ErrorCode.AUTH_FAILED,
                "a connection cannot change user; the token is for another user",
            )
        self.principal = principal
        self.phase = Phase.ACTIVE
        self.auth_deadline = None
        actions: list[Action] = []
        for name, channel in list(self.subscriptions.items()):
            try:
                authorize_subscribe(self.live, principal, channel)
            except ProtocolError as e:
                del self.subscriptions[name]
                actions.append(StopSubscription(channel, None, reply=False))
                actions.append(_error(e.code, f"no longer allowed: {e.message}", channel=name))
        actions.append(
            Send(frames.authenticated(principal.user, principal.expires_at_ms, frame.id))
        )
        return actions

    def _require_principal(self) -> auth.Principal:
        if self.principal is None:
            raise ProtocolError(ErrorCode.UNAUTHENTICATED, "authenticate first")
        if self.phase is Phase.EXPIRED:
            raise ProtocolError(
                ErrorCode.TOKEN_EXPIRED, "token has expired; authenticate again with a fresh one"
            )
        return self.principal

    def _expire(self, now: float) -> Send:
        self.phase = Phase.EXPIRED
        self.auth_deadline = now + self.live.config.limits.auth_timeout_seconds
        return _error(
            ErrorCode.TOKEN_EXPIRED, "token has expired; authenticate again with a fresh one"
        )

    def _subscribe(self, principal: auth.Principal, frame: frames.Subscribe) -> list[Action]:
        channel = frame.channel
        authorize_subscribe(self.live, principal, channel)
        limit = self.live.config.limits.subscriptions_per_connection
        if channel.name not in self.subscriptions and len(self.subscriptions) >= limit:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"a connection may follow at most {limit} channels",
                channel=channel.name,
            )
        self.subscriptions[channel.name] = channel
        return [StartSubscription(channel, frame.since, frame.last, frame.id)]

    def _publish(
        self,
        principal: auth.Principal,
        frame: frames.Publish,
        size: int,
    ) -> list[Action]:
        authorize_publish(self.live, principal, frame.channel, size)
        return [PublishMessage(frame.channel, frame.payload, frame.id)]


def _error(
    code: ErrorCode, text: str, frame_id: FrameId | None = None, channel: str | None = None
) -> Send:
    return Send(frames.error(code, text, frame_id, channel))


def _byte_length(data: bytes | str) -> int:
    if isinstance(data, bytes) or data.isascii():
        return len(data)
    return len(data.encode("utf-8", "surrogatepass"))
