"""RealtimeGateway spec (and its Channels) -> the child manifests, computed purely.

`render_children` returns every object the gateway needs as plain
dictionaries ready for server-side apply: the ConfigMap holding a
`GatewayConfig` as `gateway.yaml` (built here), the Deployment, the Service
and, when asked for, the Ingress, HorizontalPodAutoscaler and
PodDisruptionBudget (built by `workloads`). Each carries an owner reference
to the RealtimeGateway so Kubernetes deletes it with the gateway.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from neurelay.config import (
    AuthSettings,
    DrainSettings,
    GatewayConfig,
    LimitSettings,
    NatsSettings,
    PresenceSettings,
    ServerSettings,
)
from neurelay.operator import workloads
from neurelay.operator.models import ChannelSpec, RealtimeGatewaySpec
from neurelay.operator.naming import (
    AUTH_DIR,
    AUTH_PUBLIC_KEY_FILE,
    AUTH_SECRET_FILE,
    CONFIG_KEY,
    CONTAINER_PORT,
    NATS_CREDS_FILE,
    NATS_DIR,
    GatewayRef,
    Manifest,
    config_map_name,
    metadata,
    subject_prefix,
)


@dataclasses.dataclass(frozen=True)
class Children:
    """The manifests of one gateway; None for optional objects that should not exist."""

    config_map: Manifest
    deployment: Manifest
    service: Manifest
    ingress: Manifest | None
    autoscaler: Manifest | None
    disruption_budget: Manifest | None

    def present(self) -> list[Manifest]:
        candidates = (
            self.config_map,
            self.service,
            self.deployment,
            self.ingress,
            self.autoscaler,
            self.disruption_budget,
        )
        return [manifest for manifest in candidates if manifest is not None]


def gateway_config(
    gateway: GatewayRef, spec: RealtimeGatewaySpec, channels: Sequence[ChannelSpec]
) -> GatewayConfig:
    """The configuration the gateway pods read; the operator owns the streams."""
    auth = spec.auth
    return GatewayConfig(
        server=ServerSettings(host="0.0.0.0", port=CONTAINER_PORT),
        nats=NatsSettings(
            servers=[spec.nats.url],
            credentials_file=f"{NATS_DIR}/{NATS_CREDS_FILE}"
            if spec.nats.credentials_secret
            else None,
            subject_prefix=subject_prefix(gateway.namespace, gateway.name),
            manage_streams=False,
        ),
        auth=AuthSettings(
            algorithm=auth.algorithm,
            secret_file=f"{AUTH_DIR}/{AUTH_SECRET_FILE}" if auth.secret_ref else None,
            public_key_file=f"{AUTH_DIR}/{AUTH_PUBLIC_KEY_FILE}" if auth.public_key_ref else None,
            issuer=auth.issuer,
            audience=auth.audience,
            leeway_seconds=auth.leeway_seconds,
        ),
        limits=LimitSettings.model_validate(spec.limits.model_dump()),
        presence=PresenceSettings.model_validate(spec.presence.model_dump()),
        namespaces={channel.namespace: channel.settings() for channel in channels},
        allowed_origins=list(spec.allowed_origins),
        drain=DrainSettings(period_seconds=spec.drain_period_seconds),
        log_level=spec.log_level,
    )


# libyaml's emitter writes the same text about three times as fast (a gateway with 1,000
# Channels has a ConfigMap of ~150 kB); the pure-Python one where libyaml is missing.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def config_yaml(config: GatewayConfig) -> str:
    document = config.model_dump(mode="json", exclude_none=True)
    return str(yaml.dump(document, Dumper=_DUMPER, sort_keys=True))


def render_children(
    gateway: GatewayRef,
    spec: RealtimeGatewaySpec,
    channels: Sequence[ChannelSpec],
    secret_digests: Mapping[str, str],
    live_deployment: Mapping[str, Any] | None = None,
) -> Children:
    config = gateway_config(gateway, spec, channels)
    return Children(
        config_map={
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(gateway, config_map_name(gateway)),
            "data": {CONFIG_KEY: config_yaml(config)},
        },
        deployment=workloads.deployment(gateway, spec, config, secret_digests, live_deployment),
        service=workloads.service(gateway),
        ingress=workloads.ingress(gateway, spec),
        autoscaler=workloads.autoscaler(gateway, spec),
        disruption_budget=workloads.disruption_budget(gateway, spec),
    )
