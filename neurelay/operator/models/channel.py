"""The Channel spec: one channel namespace of a gateway, its history and permissions."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from neurelay.config import Audience, NamespaceSettings
from neurelay.operator.models.base import (
    NAME_PATTERN,
    NAMESPACE_PATTERN,
    SpecModel,
    immutable,
    reuse,
)


class HistorySpec(SpecModel):
    """What JetStream keeps of the namespace's channels; messages: 0 means no stream."""

    messages: int = reuse(NamespaceSettings, "history_messages")
    max_age_seconds: float = reuse(NamespaceSettings, "history_max_age_seconds")
    storage: Literal["file", "memory"] = reuse(NamespaceSettings, "storage")
    replicas: Literal[1, 3, 5] = reuse(NamespaceSettings, "replicas")


class PermissionsSpec(SpecModel):
    """Who may use the namespace's channels, on top of the token's channel claims."""

    subscribe: Audience = reuse(NamespaceSettings, "subscribe")
    publish: Audience = reuse(NamespaceSettings, "publish")


class ChannelLimitsSpec(SpecModel):
    """Limits of this namespace that override the gateway's."""

    max_message_bytes: int | None = reuse(NamespaceSettings, "max_message_bytes")


class ChannelSpec(SpecModel):
    """A channel namespace served by one RealtimeGateway, with its history and permissions."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.history.messages > 0 || self.history.replicas == 1",
                    "message": "history.replicas applies to a stream; with history.messages 0 "
                    "(core NATS only) leave it at 1",
                },
            ]
        }
    )

    gateway: str = Field(
        min_length=1,
        max_length=253,
        pattern=NAME_PATTERN,
        description="Name of the RealtimeGateway (same Kubernetes namespace) serving this "
        "channel namespace. Immutable.",
        json_schema_extra=immutable("spec.gateway is immutable; create a new Channel instead"),
    )
    namespace: str = Field(
        min_length=1,
        max_length=32,
        pattern=NAMESPACE_PATTERN,
        description="Channel namespace governed, e.g. agent, conversation, system: the part "
        "before ':' in channel names. One Channel per namespace and gateway. Immutable.",
        json_schema_extra=immutable("spec.namespace is immutable; create a new Channel instead"),
    )
    history: HistorySpec = Field(
        default_factory=HistorySpec, description="History kept in JetStream."
    )
    permissions: PermissionsSpec = Field(
        default_factory=PermissionsSpec, description="Who may subscribe and publish."
    )
    limits: ChannelLimitsSpec = Field(
        default_factory=ChannelLimitsSpec, description="Per-namespace limit overrides."
    )
    presence: bool = Field(
        False,
        description="Answer presence and presence_stats (who is subscribed, across "
        "replicas) for this namespace's channels. Applied live.",
    )
    join_leave: bool = Field(
        False,
        description="Send join and leave frames to a channel's subscribers when another "
        "connection subscribes, unsubscribes or goes away. Applied live.",
    )
    deletion_policy: Literal["Delete", "Retain"] = Field(
        "Retain",
        description="What happens to the JetStream stream when the Channel is deleted or its "
        "history set to 0: Delete removes it with its messages, Retain keeps it.",
    )

    def settings(self) -> NamespaceSettings:
        """The gateway's NamespaceSettings for this channel namespace."""
        return NamespaceSettings(
            history_messages=self.history.messages,
            history_max_age_seconds=self.history.max_age_seconds,
            storage=self.history.storage,
            replicas=self.history.replicas,
            max_message_bytes=self.limits.max_message_bytes,
            subscribe=self.permissions.subscribe,
            publish=self.permissions.publish,
            presence=self.presence,
            join_leave=self.join_leave,
        )
