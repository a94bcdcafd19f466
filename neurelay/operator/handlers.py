"""The kopf handlers: thin wiring from kopf's events to `gateways` and `channels`, in a registry.

`build_registry(ctx)` registers, for one operator process:

* indexes of Channels and RealtimeGateways (`directory`), bound at start-up;
* RealtimeGateway create/update/resume -> `reconcile_gateway`, its raw
  events -> `reconcile_gateway` when the pause annotation is removed, and
  two timers: the drift sweep of its Channels' streams (`sweeping`) and a
  periodic resync of its children, a safety net behind the watches;
* events of the children of managed gateways (ConfigMap, Deployment,
  Service, Ingress, HorizontalPodAutoscaler, PodDisruptionBudget) -> a
  coalesced gateway reconcile when one was deleted or changed by someone
  else (`watching`); Deployment changes also refresh the gateway's status;
* Secret events -> a coalesced reconcile of the gateways mounting them;
* Channel create/update/resume -> `reconcile_channel` (stream, status and
  a coalesced refresh of the gateway's ConfigMap), delete ->
  `release_channel` behind a finalizer, and raw events ->
  `reconcile_channel` when the pause annotation is removed.

`RetryLater` becomes `kopf.TemporaryError` with its back-off delay, so no
error loops hot; kopf posts it as a Kubernetes Event too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf
import pydantic

from neurelay.errors import NeurelayError
from neurelay.operator import GROUP, VERSION
from neurelay.operator.channels import reconcile_channel, release_channel
from neurelay.operator.context import Context, EventType, Log, Notify, RetryLater, resumed
from neurelay.operator.directory import index_channel, index_gateway
from neurelay.operator.gateways import reconcile_gateway, refresh_gateway_status
from neurelay.operator.models import RealtimeGatewaySpec
from neurelay.operator.naming import GATEWAY_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from neurelay.operator.sweeping import sweep_gateway

GATEWAYS = (GROUP, VERSION, "realtimegateways")
CHANNELS = (GROUP, VERSION, "channels")
# The children a gateway owns, as (group, version, plural); Deployments have a handler of their own.
CHILDREN = (
    ("", "v1", "configmaps"),
    ("", "v1", "services"),
    ("networking.k8s.io", "v1", "ingresses"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("policy", "v1", "poddisruptionbudgets"),
)
MANAGED = {MANAGED_BY_LABEL: MANAGED_BY}


def _notifier(body: Mapping[str, Any]) -> Notify:
    def notify(event_type: EventType, reason: str, message: str) -> None:
        kopf.event(body, type=event_type, reason=reason, message=message)  # type: ignore[arg-type]

    return notify


def build_registry(ctx: Context) -> kopf.OperatorRegistry:
    """A registry with every handler of the operator, bound to `ctx`."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(logger: Log, **kwargs: Any) -> kopf.ConnectionInfo | None:
        """In-cluster service account first, else $KUBECONFIG (or ~/.kube/config)."""
        return kopf.login_with_service_account(
            logger=logger, **kwargs
        ) or kopf.login_with_kubeconfig(logger=logger, **kwargs)

    # Coroutines, not functions: kopf runs plain functions in a thread per call.
    @kopf.index(*CHANNELS, id="channel_index", registry=registry)
    async def channel_index(body: kopf.Body, **_: Any) -> dict[tuple[str, ...], Any]:
        return index_channel(body)

    @kopf.index(*GATEWAYS, id="gateway_index", registry=registry)
    async def gateway_index(body: kopf.Body, **_: Any) -> dict[tuple[str, ...], str]:
        return index_gateway(body)

    @kopf.on.startup(registry=registry)
    async def start(**kwargs: Any) -> None:
        # The indexes are the same objects for the operator's lifetime, filled by kopf.
        ctx.directory.bind(kwargs["channel_index"], kwargs["gateway_index"])
        ctx.notifier = _notifier

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        await ctx.syncs.close()

    @kopf.on.resume(*GATEWAYS, id="reconcile", registry=registry)
    @kopf.on.create(*GATEWAYS, id="reconcile", registry=registry)
    @kopf.on.update(*GATEWAYS, id="reconcile", registry=registry)
    async def gateway_changed(
        body: kopf.Body, name: str, namespace: str | None, retry: int, logger: Log, **_: Any
    ) -> None:
        assert namespace is not None, "RealtimeGateway is namespaced"
        try:
            await reconcile_gateway(ctx, namespace, name, logger, _notifier(body), retry)
        except RetryLater as e:
            raise kopf.TemporaryError(str(e), delay=e.delay) from e

    @kopf.on.event(*GATEWAYS, id="pause-watch", registry=registry)
    async def gateway_event(
        event: kopf.RawEvent,
        body: kopf.Body,
        name: str,
        namespace: str | None,
        logger: Log,
        **_: Any,
    ) -> None:
        if namespace is None or event["type"] == "DELETED" or not resumed(ctx, "gateway", body):
            return
        logger.info("RealtimeGateway %s/%s resumed", namespace, name)
        try:
            await reconcile_gateway(ctx, namespace, name, logger, _notifier(body))
        except RetryLater as e:
            logger.info("RealtimeGateway %s/%s: %s", namespace, name, e)

    @kopf.on.event(*CHANNELS, id="pause-watch", registry=registry)
    async def channel_event(
        event: kopf.RawEvent,
        body: kopf.Body,
        name: str,
        namespace: str | None,
        logger: Log,
        **_: Any,
    ) -> None:
        if namespace is None or event["type"] == "DELETED" or not resumed(ctx, "channel", body):
            return
        logger.info("Channel %s/%s resumed", namespace, name)
        try:
            await reconcile_channel(
                ctx, namespace, name, logger, _notifier(body), sync_gateway=True
            )
        except RetryLater as e:
            logger.info("Channel %s/%s: %s", namespace, name, e)

    @kopf.timer(
        *GATEWAYS,
        id="drift-sweep",
        interval=ctx.settings.drift_interval_seconds,
        initial_delay=ctx.settings.drift_interval_seconds,
        registry=registry,
    )
    async def gateway_drift_sweep(
        body: kopf.Body, name: str, namespace: str | None, logger: Log, **_: Any
    ) -> None:
        assert namespace is not None, "RealtimeGateway is namespaced"
        try:
            spec = RealtimeGatewaySpec.model_validate(body.get("spec") or {})
        except pydantic.ValidationError:
            return  # the gateway's own status says so

        async def reconcile(channel_namespace: str, channel: str) -> None:
            try:
                await reconcile_channel(ctx, channel_namespace, channel, logger, sync_gateway=False)
            except RetryLater as e:
                # The next sweep is the retry.
                logger.info("Channel %s/%s: %s", channel_namespace, channel, e)

        try:
            await sweep_gateway(
                kube=ctx.kube,
                nats=ctx.nats,
                directory=ctx.directory,
                namespace=namespace,
                gateway=name,
                spec=spec,
                reconcile_channel=reconcile,
            )
        except NeurelayError as e:
            logger.debug("drift sweep of RealtimeGateway %s/%s skipped: %s", namespace, name, e)

    @kopf.timer(
        *GATEWAYS,
        id="resync",
        interval=ctx.settings.gateway_resync_seconds,
        initial_delay=ctx.settings.gateway_resync_seconds,
        registry=registry,
    )
    async def gateway_resync(name: str, namespace: str | None, **_: Any) -> None:
        assert namespace is not None, "RealtimeGateway is namespaced"
        ctx.syncs.request(namespace, name)

    @kopf.on.event("apps", "v1", "deployments", id="child", labels=MANAGED, registry=registry)
    async def deployment_changed(
        event: kopf.RawEvent, body: kopf.Body, namespace: str | None, logger: Log, **_: Any
    ) -> None:
        gateway = (body.metadata.labels or {}).get(GATEWAY_LABEL)
        if not gateway or namespace is None:
            return
        if ctx.children.observe(event["type"], body):
            ctx.syncs.request(namespace, gateway)
        if event["type"] != "DELETED":
            try:
                await refresh_gateway_status(ctx, namespace, gateway, body, logger)
            except NeurelayError as e:
                logger.info("RealtimeGateway %s/%s: %s", namespace, gateway, e)

    for group, version, plural in CHILDREN:

        @kopf.on.event(group, version, plural, id="child", labels=MANAGED, registry=registry)
        async def child_changed(
            event: kopf.RawEvent, body: kopf.Body, namespace: str | None, **_: Any
        ) -> None:
            gateway = (body.metadata.labels or {}).get(GATEWAY_LABEL)
            if gateway and namespace is not None and ctx.children.observe(event["type"], body):
                ctx.syncs.request(namespace, gateway)

    @kopf.on.event("", "v1", "secrets", id="mounted-secret", registry=registry)
    async def secret_changed(
        event: kopf.RawEvent, name: str, namespace: str | None, **_: Any
    ) -> None:
        # No type: the initial listing, which the gateways' resume already covers.
        if event["type"] is None or namespace is None:
            return
        for gateway in ctx.directory.gateways_mounting(namespace, name):
            ctx.syncs.request(namespace, gateway)

    @kopf.on.resume(*CHANNELS, id="reconcile", registry=registry)
    @kopf.on.create(*CHANNELS, id="reconcile", registry=registry)
    @kopf.on.update(*CHANNELS, id="reconcile", registry=registry)
    async def channel_changed(
        body: kopf.Body, name: str, namespace: str | None, retry: int, logger: Log, **_: Any
    ) -> None:
        assert namespace is not None, "Channel is namespaced"
        try:
            await reconcile_channel(
                ctx, namespace, name, logger, _notifier(body), retry=retry, sync_gateway=True
            )
        except RetryLater as e:
            raise kopf.TemporaryError(str(e), delay=e.delay) from e

    @kopf.on.delete(*CHANNELS, id="release", registry=registry)
    async def channel_deleted(body: kopf.Body, retry: int, logger: Log, **_: Any) -> None:
        try:
            await release_channel(ctx, body, logger, _notifier(body), retry=retry)
        except RetryLater as e:
            raise kopf.TemporaryError(str(e), delay=e.delay) from e

    return registry
