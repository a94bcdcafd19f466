"""The RealtimeGateway spec: the gateway's pods, configuration, exposure and scaling."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from neurelay.config import (
    Algorithm,
    AuthSettings,
    DrainSettings,
    GatewayConfig,
    LimitSettings,
    PresenceSettings,
)
from neurelay.operator.models.base import (
    DEFAULT_IMAGE,
    DEFAULT_LIMITS,
    DEFAULT_REQUESTS,
    NAME_PATTERN,
    Quantity,
    SecretKeyRef,
    SpecModel,
    reuse,
)


class NatsSpec(SpecModel):
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


class AuthSpec(SpecModel):
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


class LimitsSpec(SpecModel):
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
    http_requests_per_second: float = reuse(LimitSettings, "http_requests_per_second")
    http_burst: int | None = reuse(LimitSettings, "http_burst")
    http_publish_messages_per_second: float = reuse(
        LimitSettings, "http_publish_messages_per_second"
    )
    http_publish_burst: int | None = reuse(LimitSettings, "http_publish_burst")
    http_publish_bytes_in_flight: int = reuse(LimitSettings, "http_publish_bytes_in_flight")
    send_queue_frames: int = reuse(LimitSettings, "send_queue_frames")
    send_queue_bytes: int = reuse(LimitSettings, "send_queue_bytes")
    replay_bytes: int = reuse(LimitSettings, "replay_bytes")
    auth_timeout_seconds: float = reuse(LimitSettings, "auth_timeout_seconds")
    heartbeat_seconds: float = reuse(LimitSettings, "heartbeat_seconds")
    connection_lease_seconds: float = reuse(LimitSettings, "connection_lease_seconds")


class PresenceSpec(SpecModel):
    """Presence across replicas (for Channels with presence or joinLeave); applied live."""

    ttl_seconds: float = reuse(PresenceSettings, "ttl_seconds")
    max_clients: int = reuse(PresenceSettings, "max_clients")
    request_timeout_seconds: float = reuse(PresenceSettings, "request_timeout_seconds")


class IngressSpec(SpecModel):
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


class AutoscalingSpec(SpecModel):
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


class DisruptionBudgetSpec(SpecModel):
    """A PodDisruptionBudget limiting voluntary evictions (node drains)."""

    enabled: bool = Field(True, description="Create a PodDisruptionBudget.")
    max_unavailable: int = Field(
        1,
        ge=0,
        le=1000,
        description="Replicas that may be evicted at once; each eviction drains its "
        "connections over drainPeriodSeconds.",
    )


class PodSecuritySpec(SpecModel):
    """Pod security; the gateway always runs as non-root on a read-only root file system."""

    run_as_user: int = Field(10001, ge=1, le=2**31 - 1, description="UID (never 0).")
    run_as_group: int = Field(10001, ge=0, le=2**31 - 1, description="Primary GID.")
    fs_group: int = Field(10001, ge=0, le=2**31 - 1, description="GID owning mounted volumes.")
    seccomp_profile: Literal["RuntimeDefault", "Unconfined"] = Field(
        "RuntimeDefault", description="Seccomp profile type of the pod."
    )


class ResourcesSpec(SpecModel):
    """Compute resources of the gateway container (as in a container's `resources`)."""

    requests: dict[str, Quantity] = Field(
        default_factory=lambda: dict(DEFAULT_REQUESTS),
        description="Minimum resources, e.g. cpu: 100m, memory: 128Mi; CPU autoscaling is "
        "relative to the CPU request.",
        json_schema_extra={"default": dict(DEFAULT_REQUESTS)},
    )
    limits: dict[str, Quantity] = Field(
        default_factory=lambda: dict(DEFAULT_LIMITS),
        description="Maximum resources, e.g. memory: 512Mi.",
        json_schema_extra={"default": dict(DEFAULT_LIMITS)},
    )


class RealtimeGatewaySpec(SpecModel):
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
    presence: PresenceSpec = Field(
        default_factory=PresenceSpec,
        description="Presence, join/leave and server API queries across the gateway's pods.",
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
