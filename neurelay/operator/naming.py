"""Names, labels and paths a RealtimeGateway's children share, computed purely.

The identity of a gateway (`GatewayRef`), the labels and selector of its
pods, the owner-referenced metadata of each child, its NATS subject prefix,
its endpoint, and the paths where pods find their configuration and
Secrets: everything `render` and `workloads` both need, and the operator's
handlers select objects by.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any

from neurelay.operator import API_VERSION, GROUP
from neurelay.operator.models import RealtimeGatewaySpec

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


def metadata(gateway: GatewayRef, name: str | None = None) -> Manifest:
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
