"""The workload children of a RealtimeGateway: Deployment, Service, Ingress, autoscaler, budget.

Plain dictionaries ready for server-side apply, computed purely. The pod
template carries a hash (`RESTART_HASH_ANNOTATION`) of only what a running
gateway cannot take live: the `server` and `nats` sections, the image and
the Secrets' references and contents. Limits, origins and namespaces change
the ConfigMap only; the gateway re-reads the mounted file.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from neurelay.config import RESTART_SECTIONS, GatewayConfig
from neurelay.operator.models import RealtimeGatewaySpec, SecretKeyRef
from neurelay.operator.naming import (
    AUTH_DIR,
    AUTH_PUBLIC_KEY_FILE,
    AUTH_SECRET_FILE,
    CONFIG_DIR,
    CONFIG_PATH,
    CONTAINER_PORT,
    GRACE_MARGIN_SECONDS,
    NATS_CREDS_FILE,
    NATS_DIR,
    RESTART_HASH_ANNOTATION,
    SERVICE_PORT,
    GatewayRef,
    Manifest,
    config_map_name,
    labels,
    metadata,
    selector,
)


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


def deployment(
    gateway: GatewayRef,
    spec: RealtimeGatewaySpec,
    config: GatewayConfig,
    secret_digests: Mapping[str, str],
    live: Mapping[str, Any] | None = None,
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
    # Always declared: an apply without the field would drop it to the default of 1,
    # below the autoscaler's minimum. With autoscaling on it is the live count
    # (the autoscaler's choice) kept within [minReplicas, maxReplicas].
    deployment_spec = {"replicas": desired_replicas(spec, live), **deployment_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(gateway),
        "spec": deployment_spec,
    }


def _pre_stop(spec: RealtimeGatewaySpec) -> Manifest:
    """A pause before SIGTERM: endpoints drop the pod before it starts closing clients."""
    if not spec.pre_stop_seconds:
        return {}
    return {"lifecycle": {"preStop": {"exec": {"command": ["sleep", str(spec.pre_stop_seconds)]}}}}


def service(gateway: GatewayRef) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(gateway),
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


def ingress(gateway: GatewayRef, spec: RealtimeGatewaySpec) -> Manifest | None:
    ingress = spec.ingress
    if ingress is None:
        return None
    meta = metadata(gateway)
    meta["annotations"] = {
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
        "metadata": meta,
        "spec": body,
    }


def autoscaler(gateway: GatewayRef, spec: RealtimeGatewaySpec) -> Manifest | None:
    scaling = spec.autoscaling
    if not scaling.enabled:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(gateway),
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


def disruption_budget(gateway: GatewayRef, spec: RealtimeGatewaySpec) -> Manifest | None:
    budget = spec.pod_disruption_budget
    if not budget.enabled:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(gateway),
        "spec": {
            "maxUnavailable": budget.max_unavailable,
            "selector": {"matchLabels": selector(gateway)},
        },
    }


def desired_replicas(spec: RealtimeGatewaySpec, deployment: Mapping[str, Any] | None) -> int:
    """Replicas the gateway should have: the spec's, or the autoscaler's current choice.

    With autoscaling on, the live count clamped to [minReplicas, maxReplicas]
    (minReplicas for a Deployment not created yet).
    """
    if not spec.autoscaling.enabled:
        return spec.replicas
    scaling = spec.autoscaling
    current = (deployment or {}).get("spec", {}).get("replicas")
    if current is None:
        return scaling.min_replicas
    return min(max(int(current), scaling.min_replicas), scaling.max_replicas)
