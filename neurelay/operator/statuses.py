"""Statuses: the typed status of a RealtimeGateway or Channel, built purely from what was observed.

Conditions are computed as plain dictionaries by `conditions` (which keeps
transition times stable) and validated into the `RealtimeGatewayStatus` and
`ChannelStatus` models here, so a status the operator writes always has the
shape the CRD declares. Only the fields given are set: a status is written
as a merge patch of exactly those (`context.status_patch`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from neurelay.operator import conditions as cond
from neurelay.operator.models import (
    ChannelStatus,
    Condition,
    RealtimeGatewaySpec,
    RealtimeGatewayStatus,
)
from neurelay.operator.naming import GatewayRef, endpoint, selector_string
from neurelay.operator.workloads import desired_replicas

Conditions = Sequence[Mapping[str, Any]]
_ORDER = {cond.READY: 0, cond.PROGRESSING: 1, cond.DEGRADED: 2}


def typed(conditions: Conditions) -> list[Condition]:
    return [Condition.model_validate(c) for c in conditions]


def conditions_of(status: RealtimeGatewayStatus | ChannelStatus) -> list[dict[str, Any]]:
    """The status's conditions as the API spells them (input to `conditions.set_condition`)."""
    return [c.model_dump(by_alias=True, exclude_unset=True) for c in status.conditions]


def gateway_status(
    spec: RealtimeGatewaySpec,
    gateway: GatewayRef,
    deployment: Mapping[str, Any] | None,
    channels: Sequence[str],
    conditions: Conditions,
    *,
    observed_generation: int | None = None,
) -> RealtimeGatewayStatus:
    """Replicas, endpoint, channels and Ready/Progressing computed from the Deployment."""
    live = (deployment or {}).get("status") or {}
    generation = int((deployment or {}).get("metadata", {}).get("generation", 0))
    desired = desired_replicas(spec, deployment)
    replicas = int(live.get("replicas") or 0)
    ready = int(live.get("readyReplicas") or 0)
    updated = int(live.get("updatedReplicas") or 0)
    observed = int(live.get("observedGeneration") or 0) >= generation > 0
    rolled_out = observed and updated >= desired and replicas <= desired
    new = [dict(c) for c in conditions]
    progress = f"{updated}/{desired} replicas updated"
    if rolled_out:
        new = cond.set_condition(new, cond.PROGRESSING, False, "RolloutComplete", progress)
    else:
        new = cond.set_condition(new, cond.PROGRESSING, True, "RollingOut", progress)
    degraded = cond.find(new, cond.DEGRADED)
    if degraded is not None and degraded.get("status") == "True":
        new = cond.set_condition(
            new, cond.READY, False, str(degraded["reason"]), str(degraded.get("message", ""))
        )
    elif desired == 0:
        new = cond.set_condition(new, cond.READY, False, "ScaledToZero", "0 replicas desired")
    elif ready >= desired:
        new = cond.set_condition(new, cond.READY, True, "ReplicasReady", f"{ready}/{desired} ready")
    else:
        new = cond.set_condition(
            new, cond.READY, False, "ReplicasNotReady", f"{ready}/{desired} replicas ready"
        )
    new.sort(key=lambda c: _ORDER.get(str(c.get("type")), 9))
    fields: dict[str, Any] = {
        "replicas": replicas,
        "desired_replicas": desired,
        "ready_replicas": ready,
        "selector": selector_string(gateway),
        "endpoint": endpoint(gateway, spec),
        "channels": sorted(channels),
        "conditions": typed(new),
    }
    if observed_generation is not None:
        fields["observed_generation"] = observed_generation
    return RealtimeGatewayStatus(**fields)


def gateway_failure(conditions: Conditions, reason: str, message: str) -> RealtimeGatewayStatus:
    """Degraded and not Ready, for `reason`; the rest of the status is left as it is."""
    new = cond.set_condition(conditions, cond.DEGRADED, True, reason, message)
    new = cond.set_condition(new, cond.READY, False, reason, message)
    return RealtimeGatewayStatus(conditions=typed(new))


def gateway_applied(conditions: Conditions, generation: int) -> list[dict[str, Any]]:
    """The conditions once every child is applied (not Degraded)."""
    return cond.set_condition(
        conditions, cond.DEGRADED, False, "AsExpected", "children applied", generation=generation
    )


def channel_status(
    conditions: Conditions,
    generation: int,
    ready: bool,
    reason: str,
    message: str,
    **fields: Any,
) -> ChannelStatus:
    """Ready (or not) for `reason`, observed at `generation`, with extra `fields` set."""
    new = cond.set_condition(conditions, cond.READY, ready, reason, message, generation=generation)
    return ChannelStatus(conditions=typed(new), observed_generation=generation, **fields)
