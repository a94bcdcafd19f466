"""Specs and statuses of the RealtimeGateway and Channel custom resources, as pydantic models.

These models are the one definition of both kinds: `crdgen` turns them into
the CRDs' OpenAPI schemas (descriptions, defaults, bounds, CEL rules) and the
operator parses custom resources with them. Field names are snake_case in
Python and camelCase in Kubernetes (aliases). `base` holds what both kinds
share, `gateway` and `channel` their specs, `status` their statuses; the
names callers use are exported here.
"""

from neurelay.operator.models.base import (
    DEFAULT_IMAGE,
    SecretKeyRef,
    SpecModel,
    immutable,
    reuse,
)
from neurelay.operator.models.channel import (
    ChannelLimitsSpec,
    ChannelSpec,
    HistorySpec,
    PermissionsSpec,
)
from neurelay.operator.models.gateway import (
    AuthSpec,
    AutoscalingSpec,
    DisruptionBudgetSpec,
    IngressSpec,
    LimitsSpec,
    NatsSpec,
    PodSecuritySpec,
    PresenceSpec,
    RealtimeGatewaySpec,
    ResourcesSpec,
)
from neurelay.operator.models.status import (
    ChannelStatus,
    Condition,
    NatsConnection,
    RealtimeGatewayStatus,
)

__all__ = [
    "DEFAULT_IMAGE",
    "AuthSpec",
    "AutoscalingSpec",
    "ChannelLimitsSpec",
    "ChannelSpec",
    "ChannelStatus",
    "Condition",
    "DisruptionBudgetSpec",
    "HistorySpec",
    "IngressSpec",
    "LimitsSpec",
    "NatsConnection",
    "NatsSpec",
    "PermissionsSpec",
    "PodSecuritySpec",
    "PresenceSpec",
    "RealtimeGatewaySpec",
    "RealtimeGatewayStatus",
    "ResourcesSpec",
    "SecretKeyRef",
    "SpecModel",
    "immutable",
    "reuse",
]
