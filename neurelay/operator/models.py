"""Specs and statuses of the RealtimeGateway and Channel custom resources, as pydantic models.

These models are the one definition of both kinds: `crdgen` turns them into
the CRDs' OpenAPI schemas (descriptions, defaults, bounds, CEL rules) and the
operator parses custom resources with them. Fields that mean the same thing
as a gateway setting are copied from `neurelay.config` with `reuse`, so the
bounds, defaults and descriptions have a single source of truth. Field names
are snake_case in Python and camelCase in Kubernetes (aliases).
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

from neurelay import __version__
from neurelay.config import (
    Algorithm,
    Audience,
    AuthSettings,
    DrainSettings,
    GatewayConfig,
    LimitSettings,
    NamespaceSettings,
)

DEFAULT_IMAGE = f"ghcr.io/neurectomy/neurelay:{__version__}"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAMESPACE_PATTERN = r"^[a-z][a-z0-9-]{0,31}$"
DEFAULT_REQUESTS: dict[str, int | str] = {"cpu": "100m", "memory": "128Mi"}
DEFAULT_LIMITS: dict[str, int | str] = {"memory": "512Mi"}


def reuse(model: type[BaseModel], name: str, *, description: str | None = None) -> Any:
    """A copy of `model`'s field `name` (default, bounds, description) for use in a spec.

    `description` is used only while the source field has none. The unit
    tests check that reused annotations equal the source's.
    """
    info = copy.deepcopy(model.model_fields[name])
    if info.description is None:
        info.description = description
    return info


def immutable(message: str) -> dict[str, Any]:
    """json_schema_extra of a field that cannot change after creation."""
    return {"x-kubernetes-validations": [{"rule": "self == oldSelf", "message": message}]}


IntOrString = Annotated[int | str, WithJsonSchema({"x-kubernetes-int-or-string": True})]


class _Spec(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="ignore",
    )


# -- RealtimeGateway ---------------------------------------------------------------------------


class SecretKeyRef(_Spec):
    """A key of a Secret in the same Kubernetes namespace as the resource."""

    name: str = Field(
        min_length=1, max_length=253, pattern=NAME_PATTERN, description="Name of the Secret."
    )
    key: str = Field(min_length=1, max_length=253, description="Key within the Secret.")


class NatsSpec(_Spec):
    """How the gateway (and the operator, for streams) reaches NATS."""

    url: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^(nats|tls|ws|wss)://\S+$",
        description="NATS server URL, e.g. nats://nats.messaging:4222; reachable from the "
        "gateway pods and from the operator, which manages the JetStream streams.",
    )
    credentials_secret: SecretKeyRef | None = Field(
        None,
        description="Secret key holding a NATS .creds file, when NATS requires credentials. "
        "Mounted into the gateway pods; a change restarts them.",
    )


class AuthSpec(_Spec):
    """How clients' JWTs are verified."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!self.algorithm.startsWith('HS') || "
                    "(has(self.secretRef) && !has(self.publicKeyRef))",
                    "message": "HS256/HS384/HS512 verify tokens with a shared secret: "
                    "set auth.secretRef and not auth.publicKeyRef",
                },
                {
                    "rule": "self.algorithm.startsWith('HS') || "
                    "(has(self.publicKeyRef) && !has(self.secretRef))",
                    "message": "RS*/ES* algorithms verify tokens with a public key: "
                    "set auth.publicKeyRef and not auth.secretRef",
                },
            ]
        }
    )

    algorithm: Algorithm = reuse(AuthSettings, "algorithm")
    secret_ref: SecretKeyRef | None = Field(
        None,
        description="Secret key holding the HMAC secret (HS* algorithms). Mounted as a file; "
        "a change restarts the gateway pods.",
    )
    public_key_ref: SecretKeyRef | None = Field(
        None,
        description="Secret key holding the PEM public key (RS*/ES* algorithms). Mounted as a "
        "file; a change restarts the gateway pods.",
    )
    issuer: str | None = reuse(AuthSettings, "issuer")
    audience: str | None = reuse(AuthSettings, "audience")
    leeway_seconds: float = reuse(AuthSettings, "leeway_seconds")


class LimitsSpec(_Spec):
    """Per-connection and per-user limits; applied by running gateways without a restart."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.sendQueueBytes >= self.maxMessageBytes",
                    "message": "limits.sendQueueBytes must hold at least one message of "
                    "limits.maxMessageBytes",
                },
                {
                    "rule": "self.heartbeatSeconds <= self.connectionLeaseSeconds * 10.0",
                    "message": "limits.heartbeatSeconds must not exceed ten connection leases",
                },
            ]
        }
    )

    connections_per_user: int = reuse(LimitSettings, "connections_per_user")
    subscriptions_per_connection: int = reuse(LimitSettings, "subscriptions_per_connection")
    max_message_bytes: int = reuse(LimitSettings, "max_message_bytes")
    messages_per_second: float = reuse(LimitSettings, "messages_per_second")
    burst: int | None = reuse(LimitSettings, "burst")
    send_queue_frames: int = reuse(LimitSettings, "send_queue_frames")
    send_queue_bytes: int = reuse(LimitSettings, "send_queue_bytes")
    auth_timeout_seconds: float = reuse(LimitSettings, "auth_timeout_seconds")
    heartbeat_seconds: float = reuse(LimitSettings, "heartbeat_seconds")
    connection_lease_seconds: float = reuse(LimitSettings, "connection_lease_seconds")


class IngressSpec(_Spec):
    """An Ingress in front of the gateway Service, tuned for long-lived WebSockets."""

    host: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^(\*\.)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Host name clients connect to; the endpoint is ws(s)://<host>/ws.",
    )
    class_name: str | None = Field(
        None, max_length=253, description="IngressClass name; the cluster default when unset."
    )
    tls_secret_name: str | None = Field(
        None,
        max_length=253,
        pattern=NAME_PATTERN,
        description="Secret with the TLS certificate for the host; the endpoint is wss:// "
        "when set.",
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Extra Ingress annotations; they win over the operator's WebSocket defaults.",
    )
    timeout_seconds: int = Field(
        3600,
        ge=60,
        le=86_400,
        description="Proxy read and send timeout (ingress-nginx annotations), long enough for "
        "idle WebSockets between heartbeats.",
    )
    session_affinity: bool = Field(
        True,
        description="Pin a client to one replica with a cookie (ingress-nginx annotations), "
        "so reconnects after a network blip land on a warm replica.",
    )


class AutoscalingSpec(_Spec):
    """A HorizontalPodAutoscaler on CPU; when enabled it owns the replica count."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.minReplicas <= self.maxReplicas",
                    "message": "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
                }
            ]
        }
    )

    enabled: bool = Field(
        False,
        description="Create a HorizontalPodAutoscaler; spec.replicas is then ignored and the "
        "operator leaves the Deployment's replicas to the autoscaler.",
    )
    min_replicas: int = Field(2, ge=1, le=1000, description="Fewest replicas.")
    max_replicas: int = Field(10, ge=1, le=1000, description="Most replicas.")
    target_cpu_percent: int = Field(
        70, ge=1, le=100, description="Average CPU utilisation (% of requests) to aim for."
    )


class DisruptionBudgetSpec(_Spec):
    """A PodDisruptionBudget limiting voluntary evictions (node drains)."""

    enabled: bool = Field(True, description="Create a PodDisruptionBudget.")
    max_unavailable: int = Field(
        1,
        ge=0,
        le=1000,
        description="Replicas that may be evicted at once; each eviction drains its "
        "connections over drainPeriodSeconds.",
    )


class PodSecuritySpec(_Spec):
    """Pod security; the gateway always runs as non-root on a read-only root file system."""

    run_as_user: int = Field(10001, ge=1, le=2**31 - 1, description="UID (never 0).")
    run_as_group: int = Field(10001, ge=0, le=2**31 - 1, description="Primary GID.")
    fs_group: int = Field(10001, ge=0, le=2**31 - 1, description="GID owning mounted volumes.")
    seccomp_profile: Literal["RuntimeDefault", "Unconfined"] = Field(
        "RuntimeDefault", description="Seccomp profile type of the pod."
    )


class ResourcesSpec(_Spec):
    """Compute resources of the gateway container (as in a container's `resources`)."""

    requests: dict[str, IntOrString] = Field(
        default_factory=lambda: dict(DEFAULT_REQUESTS),
        description="Minimum resources, e.g. cpu: 100m, memory: 128Mi; CPU autoscaling is "
        "relative to the CPU request.",
        json_schema_extra={"default": dict(DEFAULT_REQUESTS)},
    )
    limits: dict[str, IntOrString] = Field(
        default_factory=lambda: dict(DEFAULT_LIMITS),
        description="Maximum resources, e.g. memory: 512Mi.",
        json_schema_extra={"default": dict(DEFAULT_LIMITS)},
    )


class RealtimeGatewaySpec(_Spec):
    """Desired state of a Neurelay gateway: its pods, configuration and exposure."""

    replicas: int = Field(
        2,
        ge=0,
        le=1000,
        description="Gateway pods; ignored while autoscaling.enabled. Settable with "
        "`kubectl scale`.",
    )
    image: str = Field(
        DEFAULT_IMAGE, min_length=1, max_length=1024, description="Gateway container image."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Pull policy of the gateway image."
    )
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="Container compute resources."
    )
    nats: NatsSpec = Field(description="NATS connection.")
    auth: AuthSpec = Field(description="Client token verification.")
    limits: LimitsSpec = Field(
        default_factory=LimitsSpec, description="Per-connection and per-user limits."
    )
    allowed_origins: list[str] = reuse(GatewayConfig, "allowed_origins")
    ingress: IngressSpec | None = Field(
        None, description="Expose the gateway through an Ingress; none when unset."
    )
    autoscaling: AutoscalingSpec = Field(
        default_factory=AutoscalingSpec, description="Horizontal autoscaling on CPU."
    )
    pod_disruption_budget: DisruptionBudgetSpec = Field(
        default_factory=DisruptionBudgetSpec, description="Eviction budget."
    )
    pod_security: PodSecuritySpec = Field(
        default_factory=PodSecuritySpec, description="Pod security context."
    )
    pre_stop_seconds: int = Field(
        5,
        ge=0,
        le=120,
        description="Seconds a terminating pod keeps serving before it drains, so that "
        "Services and ingress controllers stop sending it new connections first.",
    )
    drain_period_seconds: float = reuse(DrainSettings, "period_seconds")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = reuse(
        GatewayConfig, "log_level", description="Gateway log level."
    )


# -- Channel ------------------------------------------------------------------------------------


class HistorySpec(_Spec):
    """What JetStream keeps of the namespace's channels; messages: 0 means no stream."""

    messages: int = reuse(NamespaceSettings, "history_messages")
    max_age_seconds: float = reuse(NamespaceSettings, "history_max_age_seconds")
    storage: Literal["file", "memory"] = reuse(NamespaceSettings, "storage")
    replicas: Literal[1, 3, 5] = reuse(NamespaceSettings, "replicas")


class PermissionsSpec(_Spec):
    """Who may use the namespace's channels, on top of the token's channel claims."""

    subscribe: Audience = reuse(NamespaceSettings, "subscribe")
    publish: Audience = reuse(NamespaceSettings, "publish")


class ChannelLimitsSpec(_Spec):
    """Limits of this namespace that override the gateway's."""

    max_message_bytes: int | None = reuse(NamespaceSettings, "max_message_bytes")


class ChannelSpec(_Spec):
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
        )


# -- Statuses -----------------------------------------------------------------------------------


class Condition(_Spec):
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


class RealtimeGatewayStatus(_Spec):
    """Observed state of a RealtimeGateway, written by the operator."""

    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation last reconciled."
    )
    replicas: int | None = Field(None, ge=0, description="Gateway pods that exist.")
    ready_replicas: int | None = Field(None, ge=0, description="Gateway pods ready for traffic.")
    selector: str | None = Field(
        None, description="Label selector of the gateway pods (for the scale subresource)."
    )
    endpoint: str | None = Field(None, description="WebSocket URL clients connect to.")
    channels: list[str] = Field(
        default_factory=list, description="Channel namespaces the gateway serves."
    )
    conditions: list[Condition] = _conditions_field()


class ChannelStatus(_Spec):
    """Observed state of a Channel, written by the operator."""

    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation last reconciled."
    )
    stream: str | None = Field(
        None, description="JetStream stream holding the history; empty without history."
    )
    messages: int | None = Field(None, ge=0, description="Messages in the stream.")
    bytes: int | None = Field(None, ge=0, description="Bytes in the stream.")
    conditions: list[Condition] = _conditions_field()
