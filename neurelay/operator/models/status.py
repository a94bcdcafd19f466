"""The statuses of both kinds, written by the operator: conditions and observed state."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from neurelay.operator.models.base import SecretKeyRef, SpecModel


class Condition(SpecModel):
    """One aspect of the resource's state, as in Kubernetes' metav1.Condition."""

    type: str = Field(max_length=64, description="Ready, Progressing or Degraded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=64, description="CamelCase reason of the last transition.")
    message: str = Field("", max_length=4096, description="Human-readable details.")
    last_transition_time: str = Field(
        description="When the status last changed (RFC 3339).", max_length=64
    )
    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation this condition was computed from."
    )


def _conditions_field() -> Any:
    return Field(
        default_factory=list,
        max_length=16,
        description="Current conditions, one per type.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )


class RealtimeGatewayStatus(SpecModel):
    """Observed state of a RealtimeGateway, written by the operator."""

    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation last reconciled."
    )
    replicas: int | None = Field(None, ge=0, description="Gateway pods that exist.")
    desired_replicas: int | None = Field(
        None,
        ge=0,
        description="Gateway pods in effect: spec.replicas, or while autoscaling the "
        "autoscaler's current choice.",
    )
    ready_replicas: int | None = Field(None, ge=0, description="Gateway pods ready for traffic.")
    selector: str | None = Field(
        None, description="Label selector of the gateway pods (for the scale subresource)."
    )
    endpoint: str | None = Field(None, description="WebSocket URL clients connect to.")
    channels: list[str] = Field(
        default_factory=list, description="Channel namespaces the gateway serves."
    )
    conditions: list[Condition] = _conditions_field()


class NatsConnection(SpecModel):
    """The NATS a Channel's stream lives on, as its gateway's spec.nats said when reconciled."""

    url: str = Field(max_length=1024, description="NATS server URL.")
    credentials_secret: SecretKeyRef | None = Field(
        None, description="Secret key holding the NATS .creds file, if NATS requires one."
    )


class ChannelStatus(SpecModel):
    """Observed state of a Channel, written by the operator."""

    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation last reconciled."
    )
    stream: str | None = Field(
        None, description="JetStream stream holding the history; empty without history."
    )
    messages: int | None = Field(None, ge=0, description="Messages in the stream.")
    bytes: int | None = Field(None, ge=0, description="Bytes in the stream.")
    nats: NatsConnection | None = Field(
        None,
        description="Where the stream was last reconciled: lets the operator delete it "
        "(deletionPolicy Delete) even after the gateway is gone.",
    )
    conditions: list[Condition] = _conditions_field()
