"""The kopf handlers: thin wiring from kopf's events to `gateways` and `channels`, in a registry.

`build_registry(ctx)` registers, for one operator process:

* RealtimeGateway create/update/resume -> `reconcile_gateway`, and its raw
  events -> `reconcile_gateway` when the pause annotation is removed;
* Deployment events of managed gateways -> status refresh (a deleted
  Deployment is re-created);
* Channel create/update/resume -> `reconcile_channel` (stream, status and
  the gateway's ConfigMap), a drift timer -> `reconcile_channel` (stream
  and status only), delete -> `release_channel` behind a finalizer, and
  raw events -> `reconcile_channel` when the pause annotation is removed.

`RetryLater` becomes `kopf.TemporaryError` with its back-off delay, so no
error loops hot; kopf posts it as a Kubernetes Event too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from neurelay.operator import GROUP, VERSION
from neurelay.operator.channels import reconcile_channel, release_channel
from neurelay.operator.context import Context, EventType, Log, Notify, RetryLater, resumed
from neurelay.operator.gateways import reconcile_gateway, refresh_gateway_status
from neurelay.operator.naming import GATEWAY_LABEL, MANAGED_BY, MANAGED_BY_LABEL

GATEWAYS = (GROUP, VERSION, "realtimegateways")
CHANNELS = (GROUP, VERSION, "channels")


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

    @kopf.on.event(
        "apps",
        "v1",
        "deployments",
        id="gateway-status",
        labels={MANAGED_BY_LABEL: MANAGED_BY},
        registry=registry,
    )
    async def deployment_changed(
        event: kopf.RawEvent, body: kopf.Body, namespace: str | None, logger: Log, **_: Any
    ) -> None:
        gateway = (body.metadata.labels or {}).get(GATEWAY_LABEL)
        if not gateway or namespace is None:
            return
        try:
            if event["type"] == "DELETED":
                await reconcile_gateway(ctx, namespace, gateway, logger)
            else:
                await refresh_gateway_status(ctx, namespace, gateway, body, logger)
        except RetryLater as e:
            logger.info("RealtimeGateway %s/%s: %s", namespace, gateway, e)

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

    @kopf.timer(
        *CHANNELS,
        id="drift-check",
        interval=ctx.settings.drift_interval_seconds,
        initial_delay=ctx.settings.drift_interval_seconds,
        registry=registry,
    )
    async def channel_drift_check(
        body: kopf.Body, name: str, namespace: str | None, logger: Log, **_: Any
    ) -> None:
        assert namespace is not None, "Channel is namespaced"
        try:
            await reconcile_channel(
                ctx, namespace, name, logger, _notifier(body), sync_gateway=False
            )
        except RetryLater as e:
            # The timer's own interval is the back-off here.
            logger.info("Channel %s/%s: %s", namespace, name, e)

    @kopf.on.delete(*CHANNELS, id="release", registry=registry)
    async def channel_deleted(body: kopf.Body, retry: int, logger: Log, **_: Any) -> None:
        try:
            await release_channel(ctx, body, logger, _notifier(body), retry=retry)
        except RetryLater as e:
            raise kopf.TemporaryError(str(e), delay=e.delay) from e

    return registry
