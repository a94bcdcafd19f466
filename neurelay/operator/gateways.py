"""Reconciling a RealtimeGateway: its children, its Channels' part of its config, its status.

Everything for one gateway runs under the gateway's lock, and every write is
idempotent (server-side apply), so a reconcile may be repeated at any time.
A failure (missing Secret, API error, invalid spec) makes the gateway
Degraded and not Ready with the reason (naming any child that is missing),
posts a Warning Event and retries with back-off (`RetryLater`); an invalid
spec waits for the next change. A child deleted or changed by another
client is restored by the same apply, with a `ChildRestored` Warning Event
(`watching` tells drift from the operator's own writes); one that another
client's change made impossible to apply over is replaced. Events ask for
reconciles through `ctx.syncs`, coalesced per gateway (`start_syncs`).
"""

from __future__ import annotations

from typing import Any

import pydantic

from neurelay.operator.coalescing import Coalescer
from neurelay.operator.context import (
    GATEWAY,
    Body,
    Context,
    Log,
    Notify,
    RetryLater,
    is_paused,
    meta,
    reconcilable,
    write_status,
)
from neurelay.operator.kube import ApplyConflict, KubeError, SecretMissing, digest
from neurelay.operator.models import RealtimeGatewaySpec
from neurelay.operator.naming import GatewayRef, config_map_name
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
        await _reconcile_gateway(ctx, body, log, notify or ctx.notifier(body), retry)


def start_syncs(ctx: Context, log: Log) -> None:
    """Route `ctx.syncs.request(namespace, name)` to coalesced `reconcile_gateway` calls."""

    async def sync(namespace: str, name: str) -> None:
        await reconcile_gateway(ctx, namespace, name, log)

    ctx.syncs = Coalescer(
        sync, log, ctx.settings.backoff, settle=ctx.settings.gateway_settle_seconds
    )


async def _reconcile_gateway(
    ctx: Context, body: Body, log: Log, notify: Notify, retry: int
) -> None:
    namespace, name, generation = meta(body)
    conditions = list((body.get("status") or {}).get("conditions") or [])

    async def fail(reason: str, message: str, *, retry_later: bool = True) -> None:
        children = {name, config_map_name(GatewayRef(namespace, name, ""))}
        missing = ctx.children.missing(namespace, children)
        if missing:
            message = f"{message}; missing: {', '.join(missing)}"
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
        channels = ctx.directory.served(namespace, name)
        # The autoscaler's current count is kept (within its bounds) across applies.
        live = (
            await ctx.kube.get("apps/v1", "Deployment", namespace, name)
            if spec.autoscaling.enabled
            else None
        )
        children = render_children(gateway, spec, channels, digests, live)
        deployment: dict[str, Any] | None = None
        for manifest in children.present():
            applied, overwritten = await _apply(ctx, manifest)
            if manifest["kind"] == "Deployment":
                deployment = applied
            repaired = ctx.children.applied(applied, overwritten)
            if repaired is not None:
                log.warning("RealtimeGateway %s/%s: %s", namespace, name, repaired)
                notify("Warning", "ChildRestored", repaired)
                ctx.metrics.reconciliations.labels("RealtimeGateway", "restored").inc()
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


async def _apply(ctx: Context, manifest: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Server-side apply; with the clients whose changes it overwrote, if any.

    Unforced first: a conflict names who set a declared field to another
    value, however the watch's events were batched, and the forced apply
    then restores it. An autoscaler's replica count alone is not drift.
    """
    try:
        return await ctx.kube.apply(manifest, force=False), None
    except ApplyConflict as conflict:
        try:
            applied = await ctx.kube.apply(manifest)
        except KubeError as e:
            applied = await _replace_if_refused(ctx, manifest, e)
        if conflict.fields == {".spec.replicas"}:
            return applied, None
        return applied, ", ".join(sorted(conflict.managers))
    except KubeError as e:
        return await _replace_if_refused(ctx, manifest, e), None


async def _replace_if_refused(
    ctx: Context, manifest: dict[str, Any], error: KubeError
) -> dict[str, Any]:
    """Create afresh a child that another client's change made unappliable, else re-raise.

    Fields another client added can make the declared object invalid (e.g. a
    second port named http): apply leaves others' fields alone, so only a
    fresh object lets it back.
    """
    if error.status != 422 or not ctx.children.replace(manifest):
        raise error
    meta_ = manifest["metadata"]
    await ctx.kube.delete(
        manifest["apiVersion"], manifest["kind"], meta_["namespace"], meta_["name"]
    )
    return await ctx.kube.apply(manifest)


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
