"""Reconciling a Channel: its JetStream stream, its status, and its release on deletion.

The Channel's stream is synced through `neurelay.jetstream` on the NATS of
the gateway it names; what the sync means (created, re-created,
drift-corrected, adopted, refused) is decided by `outcomes` and written as a
typed status by `statuses`. A Channel that loses the election for its
(gateway, channel namespace) is reported as a conflict and touches nothing.
On deletion, `release_channel` deletes or retains the stream by the
Channel's deletionPolicy. The NATS a stream lives on is recorded in
`status.nats` before the stream is created, so a stream never exists
without that record; a Channel that cannot say where its stream may be is
held (StreamNotDeleted), never silently released. After a change, a reconcile of the gateway is
asked for (coalesced: a burst of Channels costs a few), so its ConfigMap
serves the Channel's settings. The election reads the operator's
`directory`, not a listing of the namespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic

from neurelay.errors import BusError, BusUnavailable
from neurelay.jetstream.streams import desired_stream
from neurelay.jetstream.syncing import JetStream, delete_stream, stream_info, sync_stream
from neurelay.operator.context import (
    CHANNEL,
    GATEWAY,
    Body,
    Context,
    EventType,
    Log,
    Notify,
    RetryLater,
    is_paused,
    meta,
    no_events,
    reconcilable,
    status_patch,
    write_status,
)
from neurelay.operator.kube import SecretMissing
from neurelay.operator.models import (
    ChannelSpec,
    ChannelStatus,
    NatsConnection,
    RealtimeGatewaySpec,
)
from neurelay.operator.naming import subject_prefix
from neurelay.operator.outcomes import recorded, stream_outcome
from neurelay.operator.settings import ABANDON_STREAM_ANNOTATION
from neurelay.operator.statuses import channel_status
from neurelay.protocol.channels import stream_name

NO_STREAM = {"stream": "", "messages": 0, "bytes": 0}


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
    gateway_name: str | None = None
    async with ctx.lock("channel", namespace, name):
        body = await reconcilable(ctx, CHANNEL, namespace, name, log)
        if body is None:
            return
        gateway_name = (body.get("spec") or {}).get("gateway")
        try:
            await _reconcile_channel(ctx, body, log, notify or ctx.notifier(body), retry)
        finally:
            if sync_gateway and gateway_name:
                # The gateway's ConfigMap lists its Channels; its failures are its own.
                ctx.syncs.request(namespace, gateway_name)


async def _reconcile_channel(
    ctx: Context, body: Body, log: Log, notify: Notify, retry: int
) -> None:
    namespace, name, generation = meta(body)
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
        new = channel_status(conditions, generation, ready, reason, message, **(fields or {}))
        changed = await write_status(ctx, CHANNEL, body, new)
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
    owner = ctx.directory.owner(namespace, spec.gateway, spec.namespace, include_deleting=True)
    if owner != name:
        await report(
            False,
            "Conflict",
            f"channel namespace {spec.namespace!r} of gateway {spec.gateway!r} is already "
            f"governed by the older Channel {owner!r}; this one is ignored",
            event="Warning",
            fields=NO_STREAM,
        )
        ctx.metrics.reconciliations.labels("Channel", "conflict").inc()
        return
    try:
        gateway_spec = RealtimeGatewaySpec.model_validate(gateway.get("spec") or {})
        js = await _jetstream(ctx, namespace, gateway_spec)
        prefix = subject_prefix(namespace, spec.gateway)
        settings = spec.settings()
        if not settings.keeps_history:
            message = await _no_history(ctx, js, prefix, spec)
            await report(True, "NoHistory", message, fields=NO_STREAM)
            ctx.metrics.reconciliations.labels("Channel", "ok").inc()
            return
        desired = desired_stream(prefix, spec.namespace, settings)
        # Where the stream lives is recorded before it can exist: killed between the
        # two, the Channel still says which NATS to delete it from.
        await write_status(ctx, CHANNEL, body, ChannelStatus(nats=_connection(gateway_spec)))
        sync = await sync_stream(js, desired)
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

    stream = desired.name or ""
    outcome = stream_outcome(stream, sync, recorded(status, generation))
    if outcome.event is not None and not outcome.event_on_change_only:
        notify(outcome.event.type, outcome.event.reason, outcome.event.message)
    if outcome.changed_stream:
        ctx.metrics.stream_actions.labels(outcome.action).inc()
        log.info("Channel %s/%s: stream %s %s", namespace, name, stream, outcome.action)
    fields = {
        "stream": stream,
        "messages": int(sync.info.state.messages or 0),
        "bytes": int(sync.info.state.bytes or 0),
        "nats": _connection(gateway_spec),
    }
    await report(
        outcome.ready,
        outcome.reason,
        outcome.message,
        event=outcome.event.type if outcome.event and outcome.event_on_change_only else None,
        fields=fields,
    )
    ctx.metrics.reconciliations.labels("Channel", "ok" if outcome.ready else "refused").inc()


async def _no_history(ctx: Context, js: JetStream, prefix: str, spec: ChannelSpec) -> str:
    """Without history there is no stream: delete it (Delete) or say it is retained."""
    name = stream_name(prefix, spec.namespace)
    message = "history.messages is 0: channels go over core NATS, without a stream"
    if spec.deletion_policy == "Delete":
        if await delete_stream(js, name):
            ctx.metrics.stream_actions.labels("deleted").inc()
    elif await stream_info(js, name) is not None:
        message += f"; stream {name} retained (deletionPolicy Retain)"
    return message


async def release_channel(
    ctx: Context,
    body: Body,
    log: Log,
    notify: Notify | None = None,
    *,
    retry: int = 0,
) -> None:
    """On deletion: delete or retain the stream (deletionPolicy), then refresh the gateway."""
    namespace, name, _ = meta(body)
    gateway_name = (body.get("spec") or {}).get("gateway")
    async with ctx.lock("channel", namespace, name):
        await _release_channel(ctx, body, log, notify or no_events, retry)
    if gateway_name:
        ctx.syncs.request(namespace, gateway_name)


async def _release_channel(ctx: Context, body: Body, log: Log, notify: Notify, retry: int) -> None:
    namespace, name, generation = meta(body)
    if is_paused(body):
        log.info("Channel %s/%s is paused: its stream is left as it is", namespace, name)
        return
    try:
        spec = ChannelSpec.model_validate(body.get("spec") or {})
    except pydantic.ValidationError:
        return
    owner = ctx.directory.owner(namespace, spec.gateway, spec.namespace, include_deleting=True)
    if owner != name:
        return  # a losing claimant never touched the stream
    stream = stream_name(subject_prefix(namespace, spec.gateway), spec.namespace)
    status = body.get("status") or {}
    # Whatever comes next (deleted, retained, retried, held), the status no longer says
    # the stream matches the spec of a Channel that is going away.
    going = "deleted with it" if spec.deletion_policy == "Delete" else "retained"
    deleting = channel_status(
        list(status.get("conditions") or []),
        generation,
        False,
        "Deleting",
        f"the Channel is being deleted; stream {stream} is {going} "
        f"(deletionPolicy {spec.deletion_policy})",
    )
    ready: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    if ready.get("reason") != "StreamNotDeleted":  # a held Channel keeps saying why
        await write_status(ctx, CHANNEL, body, deleting)
        status = {**status, **status_patch(deleting)}
    if spec.deletion_policy == "Retain":
        log.info("Channel %s/%s deleted; stream %s retained", namespace, name, stream)
        notify("Normal", "StreamRetained", f"stream {stream} retained (deletionPolicy Retain)")
        return
    if _abandoned(body):
        message = f"stream {stream} left in place: annotated {ABANDON_STREAM_ANNOTATION}=true"
        log.warning("Channel %s/%s: %s", namespace, name, message)
        notify("Warning", "StreamAbandoned", message)
        ctx.metrics.stream_actions.labels("abandoned").inc()
        return

    async def hold(why: str) -> RetryLater:
        # Held by the finalizer until the stream goes or someone lets it go, never silently.
        message = (
            f"stream {stream} not deleted: {why}; the Channel stays until it is, or until "
            f"annotated {ABANDON_STREAM_ANNOTATION}=true to leave the stream in place"
        )
        conditions = list(status.get("conditions") or [])
        held = channel_status(conditions, generation, False, "StreamNotDeleted", message)
        if await write_status(ctx, CHANNEL, body, held):
            notify("Warning", "StreamNotDeleted", message)
        return RetryLater(message, ctx.settings.backoff(retry))

    connection = await _release_connection(ctx, namespace, spec, status)
    if connection is None:
        raise await hold(
            f"RealtimeGateway {spec.gateway!r} is gone and neither this Channel nor another "
            "of its Channels recorded its NATS, so whether the stream exists cannot be checked"
        )
    try:
        credentials = await _credentials(ctx, namespace, connection, releasing=True)
        js = await ctx.nats.jetstream(connection.url, credentials)
        deleted = await delete_stream(js, stream)
    except (BusError, SecretMissing) as e:
        raise await hold(str(e)) from e
    if deleted:
        ctx.metrics.stream_actions.labels("deleted").inc()
    notify("Normal", "StreamDeleted", f"stream {stream} deleted (deletionPolicy Delete)")


def _abandoned(body: Body) -> bool:
    annotations = body.get("metadata", {}).get("annotations") or {}
    return str(annotations.get(ABANDON_STREAM_ANNOTATION, "")).lower() == "true"


def _connection(spec: RealtimeGatewaySpec) -> NatsConnection:
    """What the status records of the gateway's NATS (unset fields stay out of the patch)."""
    if spec.nats.credentials_secret is None:
        return NatsConnection(url=spec.nats.url)
    return NatsConnection(url=spec.nats.url, credentials_secret=spec.nats.credentials_secret)


async def _release_connection(
    ctx: Context, namespace: str, spec: ChannelSpec, status: Mapping[str, Any]
) -> NatsConnection | None:
    """The gateway's NATS while the gateway exists, else the one the Channel recorded.

    A Channel without a record (its operator stopped before its first
    reconcile got that far) borrows the record of another Channel of the
    same gateway, or the NATS this process last released one of them from:
    there, the stream's absence can be proven or it is deleted.
    """
    known = ctx.gateway_nats
    key = (namespace, spec.gateway)
    gateway = await ctx.kube.get(*GATEWAY, namespace, spec.gateway)
    if gateway is not None:
        try:
            gateway_spec = RealtimeGatewaySpec.model_validate(gateway.get("spec") or {})
            known[key] = _connection(gateway_spec)
            return known[key]
        except pydantic.ValidationError:
            pass
    if status.get("nats"):
        known[key] = NatsConnection.model_validate(status["nats"])
        return known[key]
    for sibling in await ctx.kube.list(*CHANNEL, namespace):
        recorded_nats = (sibling.get("status") or {}).get("nats")
        if (sibling.get("spec") or {}).get("gateway") == spec.gateway and recorded_nats:
            return NatsConnection.model_validate(recorded_nats)
    return known.get(key)


async def _jetstream(ctx: Context, namespace: str, spec: RealtimeGatewaySpec) -> JetStream:
    """JetStream on the gateway's NATS, with the gateway's NATS credentials."""
    connection = _connection(spec)
    return await ctx.nats.jetstream(connection.url, await _credentials(ctx, namespace, connection))


async def _credentials(
    ctx: Context, namespace: str, connection: NatsConnection, *, releasing: bool = False
) -> bytes | None:
    """The NATS credentials from the gateway's Secret.

    While releasing, a Secret deleted together with the gateway and the
    Channel (`kubectl delete -f` of one file) is replaced by what this
    process last read from it, so the stream still goes.
    """
    ref = connection.credentials_secret
    if ref is None:
        return None
    source = (namespace, ref.name, ref.key)
    try:
        credentials = await ctx.kube.secret_value(namespace, ref.name, ref.key)
    except SecretMissing:
        remembered = ctx.nats.remembered(source)
        if not releasing or remembered is None:
            raise
        return remembered
    ctx.nats.remember(source, credentials)
    return credentials
