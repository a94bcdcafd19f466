"""Reconciling RealtimeGateways and Channels: read the world, render, apply, report status.

Free of kopf: handlers call these functions and turn `RetryLater` into
`kopf.TemporaryError`. Everything for one gateway (its children, its
status, the Channels' part of its ConfigMap) runs under one lock per
gateway, and every write is idempotent (server-side apply), so a
reconcile may be repeated at any time. Status is written only when it
changed. Events go through the `Notify` callback the caller provides.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import pydantic

from neurelay.errors import BusError, BusUnavailable, NeurelayError
from neurelay.jetstream.pool import NatsPool
from neurelay.jetstream.streams import desired_stream
from neurelay.jetstream.syncing import delete_stream, stream_info, sync_stream
from neurelay.operator import API_VERSION
from neurelay.operator import conditions as cond
from neurelay.operator.kube import Kube, KubeError, SecretMissing, digest
from neurelay.operator.metrics import OperatorMetrics
from neurelay.operator.models import ChannelSpec, RealtimeGatewaySpec
from neurelay.operator.render import (
    GatewayRef,
    desired_replicas,
    endpoint,
    render_children,
    secret_refs,
    selector_string,
    subject_prefix,
)
from neurelay.operator.settings import PAUSED_ANNOTATION, OperatorSettings
from neurelay.protocol.channels import stream_name

Body = Mapping[str, Any]
EventType = Literal["Normal", "Warning"]
Notify = Callable[[EventType, str, str], None]
Log = logging.Logger | logging.LoggerAdapter[Any]

GATEWAY = (API_VERSION, "RealtimeGateway")
CHANNEL = (API_VERSION, "Channel")
OPTIONAL_CHILDREN = (
    ("ingress", "networking.k8s.io/v1", "Ingress"),
    ("autoscaler", "autoscaling/v2", "HorizontalPodAutoscaler"),
    ("disruption_budget", "policy/v1", "PodDisruptionBudget"),
)


class RetryLater(NeurelayError):
    """The resource cannot be reconciled now (status already tells why); retry after `delay`."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


@dataclasses.dataclass
class Context:
    """What every reconcile needs; built once per operator process."""

    settings: OperatorSettings
    kube: Kube
    nats: NatsPool
    metrics: OperatorMetrics
    locks: dict[tuple[str, str, str], asyncio.Lock] = dataclasses.field(default_factory=dict)
    paused: set[tuple[str, str, str]] = dataclasses.field(default_factory=set)

    def lock(self, kind: str, namespace: str, name: str) -> asyncio.Lock:
        return self.locks.setdefault((kind, namespace, name), asyncio.Lock())


def resumed(ctx: Context, kind: str, body: Body) -> bool:
    """Track the pause annotation; True when a paused resource has just been resumed.

    kopf does not see annotation-only changes as updates, so pause and
    resume are noticed from the raw watch events.
    """
    namespace, name, _ = _meta(body)
    key = (kind, namespace, name)
    if is_paused(body):
        ctx.paused.add(key)
        return False
    if key in ctx.paused:
        ctx.paused.discard(key)
        return True
    return False


def is_paused(body: Body) -> bool:
    annotations = body.get("metadata", {}).get("annotations") or {}
    return str(annotations.get(PAUSED_ANNOTATION, "")).lower() == "true"


def _meta(body: Body) -> tuple[str, str, int]:
    meta = body["metadata"]
    return meta["namespace"], meta["name"], int(meta.get("generation", 0))


# -- RealtimeGateway --------------------------------------------------------------------------


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
        body = await _reconcilable(ctx, GATEWAY, namespace, name, log)
        if body is None:
            return
        await _reconcile_gateway(ctx, body, log, notify or _no_events, retry)


async def _reconcile_gateway(
    ctx: Context, body: Body, log: Log, notify: Notify, retry: int
) -> None:
    namespace, name, generation = _meta(body)
    status: dict[str, Any] = dict(body.get("status") or {})
    conditions = list(status.get("conditions") or [])

    async def fail(reason: str, message: str, *, retry_later: bool = True) -> None:
        new = cond.set_condition(conditions, cond.DEGRADED, True, reason, message)
        new = cond.set_condition(new, cond.READY, False, reason, message)
        await _write_status(ctx, GATEWAY, body, {"conditions": new})
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
        channels = await served_channels(ctx.kube, namespace, name)
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
    conditions = cond.set_condition(
        conditions, cond.DEGRADED, False, "AsExpected", "children applied", generation=generation
    )
    new_status = gateway_status(
        spec, gateway, deployment, [channel.namespace for channel in channels], conditions
    )
    new_status["observedGeneration"] = generation
    await _write_status(ctx, GATEWAY, body, new_status)
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
        await _write_status(ctx, GATEWAY, body, new_status)
        log.debug("RealtimeGateway %s/%s status refreshed", namespace, name)


def gateway_status(
    spec: RealtimeGatewaySpec,
    gateway: GatewayRef,
    deployment: Body | None,
    channels: Sequence[str],
    conditions: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Status fields and Ready/Progressing computed from the Deployment (pure)."""
    live = (deployment or {}).get("status") or {}
    generation = int((deployment or {}).get("metadata", {}).get("generation", 0))
    desired = desired_replicas(spec, deployment)
    replicas = int(live.get("replicas") or 0)
    ready = int(live.get("readyReplicas") or 0)
    updated = int(live.get("updatedReplicas") or 0)
    observed = int(live.get("observedGeneration") or 0) >= generation > 0
    rolled_out = observed and updated >= desired and replicas <= desired
    new: list[dict[str, Any]] = [dict(c) for c in conditions]
    if rolled_out:
        new = cond.set_condition(
            new, cond.PROGRESSING, False, "RolloutComplete", f"{updated}/{desired} replicas updated"
        )
    else:
        new = cond.set_condition(
            new, cond.PROGRESSING, True, "RollingOut", f"{updated}/{desired} replicas updated"
        )
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
    order = {cond.READY: 0, cond.PROGRESSING: 1, cond.DEGRADED: 2}
    new.sort(key=lambda c: order.get(str(c.get("type")), 9))
    return {
        "replicas": replicas,
        "readyReplicas": ready,
        "selector": selector_string(gateway),
        "endpoint": endpoint(gateway, spec),
        "channels": sorted(channels),
        "conditions": new,
    }


async def served_channels(kube: Kube, namespace: str, gateway: str) -> list[ChannelSpec]:
    """The winning (oldest) valid Channel of each channel namespace of `gateway`."""
    winners: dict[str, tuple[tuple[str, str], ChannelSpec]] = {}
    for item in await kube.list(*CHANNEL, namespace):
        if item["metadata"].get("deletionTimestamp"):
            continue
        try:
            spec = ChannelSpec.model_validate(item.get("spec") or {})
        except pydantic.ValidationError:
            continue
        if spec.gateway != gateway:
            continue
        key = _age_key(item)
        if spec.namespace not in winners or key < winners[spec.namespace][0]:
            winners[spec.namespace] = (key, spec)
    return [winners[ns][1] for ns in sorted(winners)]


def _age_key(item: Body) -> tuple[str, str]:
    """Sort key: older first (creation time), then by name for the same second."""
    return (str(item["metadata"].get("creationTimestamp", "")), str(item["metadata"]["name"]))


async def channel_owner(
    kube: Kube, namespace: str, gateway: str, channel_namespace: str, *, include_deleting: bool
) -> str | None:
    """Name of the Channel that governs (gateway, channel namespace): the oldest claimant."""
    claimants = []
    for item in await kube.list(*CHANNEL, namespace):
        if item["metadata"].get("deletionTimestamp") and not include_deleting:
            continue
        spec = item.get("spec") or {}
        if spec.get("gateway") == gateway and spec.get("namespace") == channel_namespace:
            claimants.append(item)
    if not claimants:
        return None
    return str(min(claimants, key=_age_key)["metadata"]["name"])


# -- Channel ---------------------------------------------------------------------------------


async def reconcile_channel(
    ctx: Context,
    namespace: str,
    name: str,
    log: Log,
    notify: Notify | None = None,
    *,
    retry: int = 0,
    sync_gateway: bool,
) -> None:
    """Bring the Channel's stream in line with its spec; optionally refresh the gateway config."""
    notify = notify or _no_events
    gateway_name: str | None = None
    async with ctx.lock("channel", namespace, name):
        body = await _reconcilable(ctx, CHANNEL, namespace, name, log)
        if body is None:
            return
        gateway_name = (body.get("spec") or {}).get("gateway")
        try:
            await _reconcile_channel(ctx, body, log, notify, retry)
        finally:
            if sync_gateway and gateway_name:
                await _sync_gateway_quietly(ctx, namespace, gateway_name, log)


async def _sync_gateway_quietly(ctx: Context, namespace: str, gateway: str, log: Log) -> None:
    """Refresh the gateway's ConfigMap after a Channel change; its own failures are its own."""
    try:
        await reconcile_gateway(ctx, namespace, gateway, log)
    except (RetryLater, NeurelayError) as e:
        log.info("RealtimeGateway %s/%s not refreshed: %s", namespace, gateway, e)


async def _reconcile_channel(
    ctx: Context, body: Body, log: Log, notify: Notify, retry: int
) -> None:
    namespace, name, generation = _meta(body)
    status = dict(body.get("status") or {})
    conditions = list(status.get("conditions") or [])

    async def report(
        ready: bool,
        reason: str,
        message: str,
        *,
        event: EventType | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> bool:
        new = cond.set_condition(
            conditions, cond.READY, ready, reason, message, generation=generation
        )
        changed = await _write_status(
            ctx,
            CHANNEL,
            body,
            {"conditions": new, "observedGeneration": generation, **(fields or {})},
        )
        if event is not None and changed:
            notify(event, reason, message)
        return changed

    async def retry_later(reason: str, message: str) -> None:
        await report(False, reason, message, event="Warning")
        ctx.metrics.reconciliations.labels("Channel", "retry").inc()
        raise RetryLater(message, ctx.settings.backoff(retry))

    try:
        spec = ChannelSpec.model_validate(body.get("spec") or {})
    except pydantic.ValidationError as e:
        await report(False, "InvalidSpec", f"spec does not validate: {e}", event="Warning")
        return
    gateway = await ctx.kube.get(*GATEWAY, namespace, spec.gateway)
    if gateway is None:
        await retry_later(
            "GatewayNotFound", f"RealtimeGateway {spec.gateway!r} does not exist in {namespace}"
        )
        return
    owner = await channel_owner(
        ctx.kube, namespace, spec.gateway, spec.namespace, include_deleting=True
    )
    if owner != name:
        await report(
            False,
            "Conflict",
            f"channel namespace {spec.namespace!r} of gateway {spec.gateway!r} is already "
            f"governed by the older Channel {owner!r}; this one is ignored",
            event="Warning",
            fields={"stream": "", "messages": 0, "bytes": 0},
        )
        ctx.metrics.reconciliations.labels("Channel", "conflict").inc()
        return
    try:
        gateway_spec = RealtimeGatewaySpec.model_validate(gateway.get("spec") or {})
        credentials = await _nats_credentials(ctx.kube, namespace, gateway_spec)
        js = await ctx.nats.jetstream(gateway_spec.nats.url, credentials)
        prefix = subject_prefix(namespace, spec.gateway)
        settings = spec.settings()
        if not settings.keeps_history:
            await _no_history(ctx, js, prefix, spec, report)
            return
        desired = desired_stream(prefix, spec.namespace, settings)
        outcome = await sync_stream(js, desired)
    except pydantic.ValidationError as e:
        await retry_later("InvalidGateway", f"RealtimeGateway {spec.gateway!r}: {e}")
        return
    except SecretMissing as e:
        await retry_later("SecretNotFound", str(e))
        return
    except BusUnavailable as e:
        await retry_later("NatsUnavailable", str(e))
        return
    except BusError as e:
        # Retrying the same request would be refused the same way: report, wait for a change.
        await report(False, "StreamRejected", str(e), event="Warning")
        ctx.metrics.reconciliations.labels("Channel", "refused").inc()
        return

    info = outcome.info
    fields = {
        "stream": desired.name,
        "messages": int(info.state.messages or 0),
        "bytes": int(info.state.bytes or 0),
    }
    unchanged_spec = status.get("observedGeneration") == generation and bool(status.get("stream"))
    if outcome.action == "incompatible":
        message = f"{outcome.problem}; revert the spec, or delete the stream to have it re-created"
        await report(False, "IncompatibleChange", message, event="Warning", fields=fields)
        ctx.metrics.reconciliations.labels("Channel", "refused").inc()
        return
    action: str = outcome.action
    if action == "created" and unchanged_spec:
        action = "recreated"
        notify("Warning", "StreamRecreated", f"stream {desired.name} was missing; re-created")
    elif action == "created":
        notify("Normal", "StreamCreated", f"stream {desired.name} created")
    elif action == "updated" and unchanged_spec:
        action = "drift-corrected"
        detail = outcome.drift.describe() if outcome.drift else ""
        notify("Warning", "StreamDriftCorrected", f"stream {desired.name} restored: {detail}")
    elif action == "updated":
        notify("Normal", "StreamUpdated", f"stream {desired.name} updated")
    elif not status.get("stream"):
        action = "adopted"
        notify("Normal", "StreamAdopted", f"existing stream {desired.name} adopted")
    if action != "unchanged":
        ctx.metrics.stream_actions.labels(action).inc()
        log.info("Channel %s/%s: stream %s %s", namespace, name, desired.name, action)
    await report(True, "StreamReady", f"stream {desired.name} matches the spec", fields=fields)
    ctx.metrics.reconciliations.labels("Channel", "ok").inc()


async def _no_history(
    ctx: Context,
    js: Any,
    prefix: str,
    spec: ChannelSpec,
    report: Callable[..., Any],
) -> None:
    name = stream_name(prefix, spec.namespace)
    message = "history.messages is 0: channels go over core NATS, without a stream"
    if spec.deletion_policy == "Delete":
        if await delete_stream(js, name):
            ctx.metrics.stream_actions.labels("deleted").inc()
    elif await stream_info(js, name) is not None:
        message += f"; stream {name} retained (deletionPolicy Retain)"
    await report(True, "NoHistory", message, fields={"stream": "", "messages": 0, "bytes": 0})
    ctx.metrics.reconciliations.labels("Channel", "ok").inc()


async def release_channel(
    ctx: Context,
    body: Body,
    log: Log,
    notify: Notify | None = None,
    *,
    retry: int = 0,
) -> None:
    """On deletion: delete or retain the stream (deletionPolicy), then refresh the gateway."""
    notify = notify or _no_events
    namespace, name, _ = _meta(body)
    spec_raw = body.get("spec") or {}
    gateway_name = spec_raw.get("gateway")
    async with ctx.lock("channel", namespace, name):
        await _release_channel(ctx, body, log, notify, retry)
    if gateway_name:
        await _sync_gateway_quietly(ctx, namespace, gateway_name, log)


async def _reconcilable(
    ctx: Context, kind: tuple[str, str], namespace: str, name: str, log: Log
) -> Body | None:
    """The object to reconcile, or None when it is gone, being deleted or paused."""
    body = await ctx.kube.get(*kind, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    if is_paused(body):
        log.info("%s %s/%s is paused; not reconciled", kind[1], namespace, name)
        ctx.metrics.reconciliations.labels(kind[1], "paused").inc()
        return None
    return body


async def _release_channel(ctx: Context, body: Body, log: Log, notify: Notify, retry: int) -> None:
    namespace, name, _ = _meta(body)
    if is_paused(body):
        log.info("Channel %s/%s is paused: its stream is left as it is", namespace, name)
        return
    try:
        spec = ChannelSpec.model_validate(body.get("spec") or {})
    except pydantic.ValidationError:
        return
    owner = await channel_owner(
        ctx.kube, namespace, spec.gateway, spec.namespace, include_deleting=True
    )
    if owner != name:
        return  # a losing claimant never touched the stream
    prefix = subject_prefix(namespace, spec.gateway)
    stream = stream_name(prefix, spec.namespace)
    if spec.deletion_policy == "Retain":
        log.info("Channel %s/%s deleted; stream %s retained", namespace, name, stream)
        notify("Normal", "StreamRetained", f"stream {stream} retained (deletionPolicy Retain)")
        return
    gateway = await ctx.kube.get(*GATEWAY, namespace, spec.gateway)
    if gateway is None:
        log.warning(
            "Channel %s/%s deleted after its gateway: stream %s left in place",
            namespace,
            name,
            stream,
        )
        return
    try:
        gateway_spec = RealtimeGatewaySpec.model_validate(gateway.get("spec") or {})
        credentials = await _nats_credentials(ctx.kube, namespace, gateway_spec)
        js = await ctx.nats.jetstream(gateway_spec.nats.url, credentials)
        deleted = await delete_stream(js, stream)
    except (BusUnavailable, SecretMissing) as e:
        notify("Warning", "StreamNotDeleted", f"stream {stream} not deleted yet: {e}")
        raise RetryLater(str(e), ctx.settings.backoff(retry)) from e
    except BusError as e:
        notify("Warning", "StreamNotDeleted", str(e))
        raise RetryLater(str(e), ctx.settings.backoff(retry)) from e
    if deleted:
        ctx.metrics.stream_actions.labels("deleted").inc()
    notify("Normal", "StreamDeleted", f"stream {stream} deleted (deletionPolicy Delete)")


async def _nats_credentials(kube: Kube, namespace: str, spec: RealtimeGatewaySpec) -> bytes | None:
    ref = spec.nats.credentials_secret
    if ref is None:
        return None
    return await kube.secret_value(namespace, ref.name, ref.key)


# -- status ------------------------------------------------------------------------------------


async def _write_status(
    ctx: Context, kind: tuple[str, str], body: Body, status: Mapping[str, Any]
) -> bool:
    """Merge `status` into the object's status if it changes anything; True if written."""
    current = body.get("status") or {}
    if not cond.status_changed(current, status):
        return False
    namespace, name, _ = _meta(body)
    await ctx.kube.patch_status(*kind, namespace, name, status)
    return True


def _no_events(event_type: EventType, reason: str, message: str) -> None:
    del event_type, reason, message
