"""Running the operator process: `run_operator` (what `neurelay operator` calls) and its arguments.

kopf runs underneath with peering, so several replicas may run and only
the one with the highest priority acts (each replica picks a random
priority unless given one; same-priority peers would all pause). The
peering object is created if missing. kopf serves the liveness endpoint
(`/healthz` on the liveness address and port); Prometheus metrics are served
on the metrics address and port (`/metrics`). SIGTERM and SIGINT stop it
cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
from typing import TYPE_CHECKING, Any

from neurelay.operator.settings import DEFAULT_PEERING, OperatorSettings, ServingSettings

if TYPE_CHECKING:
    import kopf

    from neurelay.operator.kube import Kube
    from neurelay.operator.metrics import OperatorMetrics

# kopf, kubernetes_asyncio and the handlers are imported when the operator starts, so
# `add_arguments` costs the `neurelay` command nothing.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `neurelay operator` options (the CLI adds them and calls `main_from_args`)."""
    parser.add_argument(
        "--namespace",
        help="watch only this Kubernetes namespace (default: the whole cluster)",
    )
    parser.add_argument(
        "--liveness-address",
        default=ServingSettings.liveness_address,
        help="address /healthz binds to (default: every interface)",
    )
    parser.add_argument(
        "--liveness-port",
        type=int,
        default=ServingSettings.liveness_port,
        help="port of /healthz (0 = none)",
    )
    parser.add_argument(
        "--metrics-address",
        default=ServingSettings.metrics_address,
        help="address /metrics binds to (default: every interface)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=ServingSettings.metrics_port,
        help="port of /metrics (0 = none)",
    )
    parser.add_argument(
        "--peering",
        default=DEFAULT_PEERING,
        help="kopf peering object shared by the operator's replicas",
    )
    parser.add_argument(
        "--standalone", action="store_true", help="run without peering (a single replica)"
    )
    parser.add_argument(
        "--priority", type=int, help="peering priority (default: random; the highest acts)"
    )
    parser.add_argument(
        "--drift-interval",
        type=float,
        default=OperatorSettings.drift_interval_seconds,
        metavar="SECONDS",
        help="how often each gateway's Channels are compared with its streams",
    )
    parser.add_argument(
        "--gateway-resync",
        type=float,
        default=OperatorSettings.gateway_resync_seconds,
        metavar="SECONDS",
        help="how often each gateway is reconciled without any event (a safety net)",
    )
    parser.add_argument(
        "--retry-max",
        type=float,
        default=OperatorSettings.retry_max_seconds,
        metavar="SECONDS",
        help="longest back-off between retries",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, $KUBECONFIG)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])


def main_from_args(args: argparse.Namespace) -> int:
    return run_operator(
        args.namespace,
        ServingSettings(
            liveness_address=args.liveness_address,
            liveness_port=args.liveness_port or None,
            metrics_address=args.metrics_address,
            metrics_port=args.metrics_port or None,
        ),
        peering=None if args.standalone else args.peering,
        priority=args.priority,
        settings=OperatorSettings(
            drift_interval_seconds=args.drift_interval,
            gateway_resync_seconds=args.gateway_resync,
            retry_base_seconds=min(OperatorSettings.retry_base_seconds, args.retry_max),
            retry_max_seconds=args.retry_max,
        ),
        kubeconfig=args.kubeconfig,
        log_level=args.log_level,
    )


def run_operator(
    namespace: str | None,
    serving: ServingSettings,
    *,
    peering: str | None = DEFAULT_PEERING,
    priority: int | None = None,
    settings: OperatorSettings | None = None,
    kubeconfig: str | None = None,
    log_level: str = "INFO",
) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    from prometheus_client import start_http_server

    from neurelay.operator.kube import KubeError
    from neurelay.operator.logs import configure_logging
    from neurelay.operator.metrics import OperatorMetrics

    if kubeconfig is not None:
        # kopf's own client logs in through $KUBECONFIG; keep both clients on one cluster.
        os.environ["KUBECONFIG"] = kubeconfig
    configure_logging(log_level)
    log = logging.getLogger("neurelay.operator")
    metrics = OperatorMetrics()
    if serving.metrics_port:
        start_http_server(serving.metrics_port, serving.metrics_address, metrics.registry)
    try:
        asyncio.run(
            _operate(
                namespace=namespace,
                liveness_endpoint=serving.liveness_endpoint(),
                peering=peering,
                priority=priority,
                settings=settings or OperatorSettings(),
                kubeconfig=kubeconfig,
                metrics=metrics,
                log=log,
            )
        )
    except KubeError as e:
        log.error("cannot start: %s", e)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def kopf_settings(log_level: int = logging.WARNING) -> kopf.OperatorSettings:
    """kopf's own settings: our finalizer and annotation prefix, quiet event posting."""
    import kopf

    from neurelay.operator import GROUP
    from neurelay.operator.settings import FINALIZER

    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = log_level
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    return settings


async def _operate(
    *,
    namespace: str | None,
    liveness_endpoint: str | None,
    peering: str | None,
    priority: int | None,
    settings: OperatorSettings,
    kubeconfig: str | None,
    metrics: OperatorMetrics,
    log: logging.Logger,
) -> None:
    import kopf

    from neurelay.jetstream.pool import NatsPool
    from neurelay.operator.context import Context
    from neurelay.operator.gateways import start_syncs
    from neurelay.operator.handlers import build_registry
    from neurelay.operator.kube import Kube

    kube = await Kube.connect(log, kubeconfig)
    nats = NatsPool(
        log.getChild("nats"),
        connect_timeout=settings.nats_connect_timeout_seconds,
        request_timeout=settings.nats_request_timeout_seconds,
    )
    try:
        if peering is not None:
            await ensure_peering(kube, peering, namespace)
            if priority is None:
                priority = random.randint(1, 1_000_000)
            log.info("peering %r with priority %d", peering, priority)
        ctx = Context(settings=settings, kube=kube, nats=nats, metrics=metrics)
        start_syncs(ctx, log)
        options: dict[str, Any] = {}
        if namespace is None:
            options["clusterwide"] = True
        else:
            options["namespaces"] = [namespace]
        await kopf.operator(
            registry=build_registry(ctx),
            settings=kopf_settings(),
            standalone=peering is None,
            peering_name=peering,
            priority=priority,
            liveness_endpoint=liveness_endpoint,
            **options,
        )
    finally:
        await nats.close()
        await kube.close()


async def ensure_peering(kube: Kube, name: str, namespace: str | None) -> None:
    """Create the kopf peering object (cluster-wide, or in `namespace`) if it does not exist."""
    from neurelay.operator.kube import KubeError

    kind = "ClusterKopfPeering" if namespace is None else "KopfPeering"
    if await kube.get("kopf.dev/v1", kind, namespace, name) is not None:
        return
    metadata: dict[str, str] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    try:
        await kube.request(
            "POST",
            f"/apis/kopf.dev/v1/{'' if namespace is None else f'namespaces/{namespace}/'}"
            f"{kind.lower()}s",
            body={"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": metadata},
        )
    except KubeError as e:
        if e.status != 409:
            raise KubeError(
                f"cannot create {kind} {name!r} (are crds/kopf-peering.yaml installed?): {e}",
                e.status,
            ) from e
