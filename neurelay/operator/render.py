"""RealtimeGateway spec (and its Channels) -> the child manifests, computed purely.

`render_children` returns every object the gateway needs as plain
dictionaries ready for server-side apply: the ConfigMap holding a
`GatewayConfig` as `gateway.yaml`, the Deployment, the Service and, when
asked for, the Ingress, HorizontalPodAutoscaler and PodDisruptionBudget.
Each carries an owner reference to the RealtimeGateway so Kubernetes deletes
it with the gateway.

The pod template carries a hash (`RESTART_HASH_ANNOTATION`) of only what a
running gateway cannot take live: the `server` and `nats` sections, the
image and the Secrets' references and contents. Limits, origins and
namespaces change the ConfigMap only; the gateway re-reads the mounted file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from neurelay.config import (
    RESTART_SECTIONS,
    AuthSettings,
    DrainSettings,
    GatewayConfig,
    LimitSettings,
    NatsSettings,
    ServerSettings,
)
from neurelay.operator import API_VERSION, GROUP
from neurelay.operator.models import ChannelSpec, RealtimeGatewaySpec, SecretKeyRef

Manifest = dict[str, Any]

CONFIG_DIR = "/etc/neurelay"
CONFIG_KEY = "gateway.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
AUTH_DIR = "/var/run/neurelay/auth"
NATS_DIR = "/var/run/neurelay/nats"
AUTH_SECRET_FILE = "secret"
AUTH_PUBLIC_KEY_FILE = "public.pem"
NATS_CREDS_FILE = "nats.creds"
CONTAINER_PORT = 8080
SERVICE_PORT = 80
# Seconds Kubernetes waits after SIGTERM beyond the gateway's drain period.
GRACE_MARGIN_SECONDS = 15

MANAGED_BY = "neurelay-operator"
RESTART_HASH_ANNOTATION = f"{GROUP}/restart-hash"
GATEWAY_LABEL = f"{GROUP}/gateway"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"

_PREFIX_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_PREFIX_MAX = 64


@dataclasses.dataclass(frozen=True)
class GatewayRef:
    """Identity of a RealtimeGateway object (what owner references and names need)."""

    namespace: str
    name: str
    uid: str


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


def subject_prefix(namespace: str, name: str) -> str:
    """The gateway's NATS subject prefix: `<namespace>_<name>`, sanitised, at most 64 chars."""
    raw = f"{namespace}_{name}"
    prefix = _PREFIX_UNSAFE.sub("_", raw)
    if len(prefix) > _PREFIX_MAX:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        prefix = f"{prefix[: _PREFIX_MAX - 9]}_{digest}"
    return prefix


def labels(gateway: GatewayRef) -> dict[str, str]:
    return {
        **selector(gateway),
        MANAGED_BY_LABEL: MANAGED_BY,
        "app.kubernetes.io/part-of": "neurelay",
    }


def selector(gateway: GatewayRef) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "neurelay-gateway",
        "app.kubernetes.io/instance": gateway.name,
        GATEWAY_LABEL: gateway.name,
    }


def selector_string(gateway: GatewayRef) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(selector(gateway).items()))


def endpoint(gateway: GatewayRef, spec: RealtimeGatewaySpec) -> str:
    if spec.ingress is not None:
        scheme = "wss" if spec.ingress.tls_secret_name else "ws"
        return f"{scheme}://{spec.ingress.host}/ws"
    return f"ws://{gateway.name}.{gateway.namespace}.svc:{SERVICE_PORT}/ws"


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
        namespaces={channel.namespace: channel.settings() for channel in channels},
        allowed_origins=list(spec.allowed_origins),
        drain=DrainSettings(period_seconds=spec.drain_period_seconds),
        log_level=spec.log_level,
    )


def config_yaml(config: GatewayConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=True)


def secret_refs(spec: RealtimeGatewaySpec) -> dict[str, SecretKeyRef]:
    """Secret keys the gateway mounts, by role: auth and nats."""
    refs: dict[str, SecretKeyRef] = {}
    auth_ref = spec.auth.secret_ref or spec.auth.public_key_ref
    if auth_ref is not None:
        refs["auth"] = auth_ref
    if spec.nats.credentials_secret is not None:
        refs["nats"] = spec.nats.credentials_secret
    return refs


def restart_hash(
    config: GatewayConfig, spec: RealtimeGatewaySpec, secret_digests: Mapping[str, str]
) -> str:
    """Digest of what needs a pod restart to take effect (see the module docstring)."""
    material = {
        "sections": {
            section: getattr(config, section).model_dump(mode="json")
            for section in sorted(RESTART_SECTIONS)
        },
        "image": spec.image,
        "secrets": {
            role: {"name": ref.name, "key": ref.key, "digest": secret_digests.get(role, "")}
            for role, ref in sorted(secret_refs(spec).items())
        },
    }
    encoded = json.dumps(material, sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def _metadata(gateway: GatewayRef, name: str | None = None) -> Manifest:
    return {
        "name": name or gateway.name,
        "namespace": gateway.namespace,
        "labels": labels(gateway),
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": "RealtimeGateway",
                "name": gateway.name,
                "uid": gateway.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def config_map_name(gateway: GatewayRef) -> str:
    return f"{gateway.name}-config"


def render_children(
    gateway: GatewayRef,
    spec: RealtimeGatewaySpec,
    channels: Sequence[ChannelSpec],
    secret_digests: Mapping[str, str],
) -> Children:
    config = gateway_config(gateway, spec, channels)
    return Children(
        config_map={
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(gateway, config_map_name(gateway)),
            "data": {CONFIG_KEY: config_yaml(config)},
        },
        deployment=_deployment(gateway, spec, config, secret_digests),
        service=_service(gateway),
        ingress=_ingress(gateway, spec),
        autoscaler=_autoscaler(gateway, spec),
        disruption_budget=_disruption_budget(gateway, spec),
    )


def _volumes(gateway: GatewayRef, spec: RealtimeGatewaySpec) -> tuple[list[Any], list[Any]]:
    volumes: list[Manifest] = [
        {"name": "config", "configMap": {"name": config_map_name(gateway)}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    mounts: list[Manifest] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    files = {
        "auth": (AUTH_DIR, AUTH_SECRET_FILE if spec.auth.secret_ref else AUTH_PUBLIC_KEY_FILE),
        "nats": (NATS_DIR, NATS_CREDS_FILE),
    }
    for role, ref in sorted(secret_refs(spec).items()):
        directory, file_name = files[role]
        volumes.append(
            {
                "name": f"{role}-secret",
                "secret": {
                    "secretName": ref.name,
                    "items": [{"key": ref.key, "path": file_name}],
                    "defaultMode": 0o440,
                },
            }
        )
        mounts.append({"name": f"{role}-secret", "mountPath": directory, "readOnly": True})
    return volumes, mounts


def _deployment(
    gateway: GatewayRef,
    spec: RealtimeGatewaySpec,
    config: GatewayConfig,
    secret_digests: Mapping[str, str],
) -> Manifest:
    volumes, mounts = _volumes(gateway, spec)
    security = spec.pod_security
    probe = {"port": "http", "scheme": "HTTP"}
    deployment_spec: Manifest = {
        "selector": {"matchLabels": selector(gateway)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
        },
        "template": {
            "metadata": {
                "labels": labels(gateway),
                "annotations": {
                    RESTART_HASH_ANNOTATION: restart_hash(config, spec, secret_digests)
                },
            },
            "spec": {
                "terminationGracePeriodSeconds": spec.pre_stop_seconds
                + math.ceil(spec.drain_period_seconds)
                + GRACE_MARGIN_SECONDS,
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": security.run_as_user,
                    "runAsGroup": security.run_as_group,
                    "fsGroup": security.fs_group,
                    "seccompProfile": {"type": security.seccomp_profile},
                },
                "containers": [
                    {
                        "name": "gateway",
                        "image": spec.image,
                        "imagePullPolicy": spec.image_pull_policy,
                        "command": ["neurelay"],
                        "args": ["gateway", "--config", CONFIG_PATH],
                        "ports": [
                            {"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}
                        ],
                        "readinessProbe": {
                            "httpGet": {**probe, "path": "/readyz"},
                            "periodSeconds": 5,
                            "failureThreshold": 2,
                        },
                        "livenessProbe": {
                            "httpGet": {**probe, "path": "/healthz"},
                            "periodSeconds": 10,
                            "failureThreshold": 3,
                        },
                        "resources": {
                            "requests": dict(spec.resources.requests),
                            "limits": dict(spec.resources.limits),
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": mounts,
                        **_pre_stop(spec),
                    }
                ],
                "volumes": volumes,
            },
        },
    }
    if not spec.autoscaling.enabled:
        # With autoscaling on, the field is left to the HorizontalPodAutoscaler.
        deployment_spec = {"replicas": spec.replicas, **deployment_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(gateway),
        "spec": deployment_spec,
    }


def _pre_stop(spec: RealtimeGatewaySpec) -> Manifest:
    """A pause before SIGTERM: endpoints drop the pod before it starts closing clients."""
    if not spec.pre_stop_seconds:
        return {}
    return {"lifecycle": {"preStop": {"exec": {"command": ["sleep", str(spec.pre_stop_seconds)]}}}}


def _service(gateway: GatewayRef) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(gateway),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(gateway),
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def websocket_annotations(timeout_seconds: int, affinity: bool) -> dict[str, str]:
    """ingress-nginx annotations for long-lived WebSockets (and optional cookie affinity)."""
    annotations = {
        "nginx.ingress.kubernetes.io/proxy-read-timeout": str(timeout_seconds),
        "nginx.ingress.kubernetes.io/proxy-send-timeout": str(timeout_seconds),
        "nginx.ingress.kubernetes.io/proxy-http-version": "1.1",
    }
    if affinity:
        annotations |= {
            "nginx.ingress.kubernetes.io/affinity": "cookie",
            "nginx.ingress.kubernetes.io/session-cookie-name": "neurelay-affinity",
            "nginx.ingress.kubernetes.io/session-cookie-max-age": "3600",
        }
    return annotations


def _ingress(gateway: GatewayRef, spec: RealtimeGatewaySpec) -> Manifest | None:
    ingress = spec.ingress
    if ingress is None:
        return None
    metadata = _metadata(gateway)
    metadata["annotations"] = {
        **websocket_annotations(ingress.timeout_seconds, ingress.session_affinity),
        **ingress.annotations,
    }
    body: Manifest = {
        "rules": [
            {
                "host": ingress.host,
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {
                                "service": {"name": gateway.name, "port": {"name": "http"}}
                            },
                        }
                    ]
                },
            }
        ]
    }
    if ingress.class_name:
        body = {"ingressClassName": ingress.class_name, **body}
    if ingress.tls_secret_name:
        body["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls_secret_name}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": body,
    }


def _autoscaler(gateway: GatewayRef, spec: RealtimeGatewaySpec) -> Manifest | None:
    scaling = spec.autoscaling
    if not scaling.enabled:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(gateway),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": gateway.name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": scaling.target_cpu_percent,
                        },
                    },
                }
            ],
        },
    }


def _disruption_budget(gateway: GatewayRef, spec: RealtimeGatewaySpec) -> Manifest | None:
    budget = spec.pod_disruption_budget
    if not budget.enabled:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(gateway),
        "spec": {
            "maxUnavailable": budget.max_unavailable,
            "selector": {"matchLabels": selector(gateway)},
        },
    }


def desired_replicas(spec: RealtimeGatewaySpec, deployment: Mapping[str, Any] | None) -> int:
    """Replicas the gateway should have: the spec's, or the autoscaler's current choice."""
    if not spec.autoscaling.enabled:
        return spec.replicas
    current = (deployment or {}).get("spec", {}).get("replicas")
    return int(current) if current is not None else spec.autoscaling.min_replicas
