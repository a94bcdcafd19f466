"""Reconciling a RealtimeGateway: its children, its Channels' part of its config, its status.

Everything for one gateway runs under the gateway's lock, and every write is
idempotent (server-side apply), so a reconcile may be repeated at any time.
A failure (missing Secret, API error, invalid spec) makes the gateway
Degraded and not Ready with the reason, posts a Warning Event and retries
with back-off (`RetryLater`); an invalid spec waits for the next change.
"""

from __future__ import annotations

from typing import Any

import pydantic

from neurelay.operator.context import (
    CHANNEL,
    GATEWAY,
    Body,
    Context,
    Log,
    Notify,
    RetryLater,
    is_paused,
    meta,
    no_events,
    reconcilable,
    write_status,
)
from neurelay.operator.election import served_channels
from neurelay.operator.kube import KubeError, SecretMissing, digest
from neurelay.operator.models import RealtimeGatewaySpec
from neurelay.operator.naming import GatewayRef
from neurelay.operator.render import render_children
from neurelay.operator.statuses import (
    gateway_applied,
    gateway_failure,
    gateway_status,
)
from neurelay.operator.workloads import secret_refs

OPTIONAL_CHILDREN = (
    ("ingress", "networking.k8s.io/v1", "Ingress"),
    ("autoscaler", "autoscaling/v2", "HorizontalPodAutoscaler"),
    ("disruption_budget", "policy/v1", "PodDisruptionBudget"),
)


async def reconcile_gateway(
    ctx: Context,
    namespace: str,
    name: str,
    log: Log,
    notify: Notify | None = None,
    retry: int = 0,
) -> None:
    """Bring the gateway's children and status in line with its spec and Channels."""
    async with ctx.lock("gateway", namespace, name):
        body = await reconcilable(ctx, GATEWAY, namespace, name, log)
        if body is None:
            return
        await _reconcile_gateway(ctx, body, log, notify or no_events, retry)


async def _reconcile_gateway(
    ctx: Context, body: Body, log: Log, notify: Notify, retry: int
) -> None:
    namespace, name, generation = meta(body)
    conditions = list((body.get("status") or {}).get("conditions") or [])

    async def fail(reason: str, message: str, *, retry_later: bool = True) -> None:
        await write_status(ctx, GATEWAY, body, gateway_failure(conditions, reason, message))
        notify("Warning", reason, message)
        ctx.metrics.reconciliations.labels("RealtimeGateway", "retry").inc()
        if retry_later:
            raise RetryLater(message, ctx.settings.backoff(retry))

    try:
        spec = RealtimeGatewaySpec.model_validate(body.get("spec") or {})
    except pydantic.ValidationError as e:
        await fail("InvalidSpec", f"spec does not validate: {e}", retry_later=False)
        return
    gateway = GatewayRef(namespace, name, body["metadata"]["uid"])
    try:
        digests = {
            role: digest(await ctx.kube.secret_value(namespace, ref.name, ref.key))
            for role, ref in secret_refs(spec).items()
        }
        channels = served_channels(await ctx.kube.list(*CHANNEL, namespace), name)
        children = render_children(gateway, spec, channels, digests)
        deployment: dict[str, Any] | None = None
        for manifest in children.present():
            applied = await ctx.kube.apply(manifest)
            if manifest["kind"] == "Deployment":
                deployment = applied
        for attribute, api_version, kind in OPTIONAL_CHILDREN:
            if getattr(children, attribute) is None:
                await ctx.kube.delete(api_version, kind, namespace, name)
    except SecretMissing as e:
        await fail("SecretNotFound", str(e))
        return
    except KubeError as e:
        await fail("ApiError", str(e))
        return
    status = gateway_status(
        spec,
        gateway,
        deployment,
        [channel.namespace for channel in channels],
        gateway_applied(conditions, generation),
        observed_generation=generation,
    )
    await write_status(ctx, GATEWAY, body, status)
    ctx.metrics.reconciliations.labels("RealtimeGateway", "ok").inc()
    log.debug("RealtimeGateway %s/%s reconciled", namespace, name)


async def refresh_gateway_status(
    ctx: Context, namespace: str, name: str, deployment: Body, log: Log
) -> None:
    """Recompute replicas and the Ready/Progressing conditions after a Deployment change."""
    async with ctx.lock("gateway", namespace, name):
        body = await ctx.kube.get(*GATEWAY, namespace, name)
        if body is None or is_paused(body) or body["metadata"].get("deletionTimestamp"):
            return
        try:
            spec = RealtimeGatewaySpec.model_validate(body.get("spec") or {})
        except pydantic.ValidationError:
            return
        status = body.get("status") or {}
        gateway = GatewayRef(namespace, name, body["metadata"]["uid"])
        new_status = gateway_status(
            spec,
            gateway,
            deployment,
            list(status.get("channels") or []),
            list(status.get("conditions") or []),
        )
        await write_status(ctx, GATEWAY, body, new_status)
        log.debug("RealtimeGateway %s/%s status refreshed", namespace, name)
