"""A thin Kubernetes API client over kubernetes_asyncio: get, list, apply, delete, patch status.

Writes of child objects are server-side apply (`PATCH` with
`application/apply-patch+yaml`, one field manager), which is an idempotent
create-or-patch: applying the same manifest twice changes nothing, and
fields the operator stops sending are removed. Unforced, an apply over a
field another client set to another value fails with `ApplyConflict`
naming that client, which is how the operator learns who changed a child.
Every failure becomes a `KubeError` carrying the HTTP status (0 when the
server was not reached).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from neurelay.errors import NeurelayError
from neurelay.operator import API_VERSION

FIELD_MANAGER = "neurelay-operator"
MAX_CONNECTIONS = 16

Manifest = dict[str, Any]

# (apiVersion, kind) -> (plural, namespaced)
RESOURCES: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Secret"): ("secrets", True),
    ("v1", "Service"): ("services", True),
    ("v1", "Namespace"): ("namespaces", False),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("networking.k8s.io/v1", "Ingress"): ("ingresses", True),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): ("horizontalpodautoscalers", True),
    ("policy/v1", "PodDisruptionBudget"): ("poddisruptionbudgets", True),
    (API_VERSION, "RealtimeGateway"): ("realtimegateways", True),
    (API_VERSION, "Channel"): ("channels", True),
    ("kopf.dev/v1", "ClusterKopfPeering"): ("clusterkopfpeerings", False),
    ("kopf.dev/v1", "KopfPeering"): ("kopfpeerings", True),
}


class KubeError(NeurelayError):
    """A Kubernetes API request failed; `status` is the HTTP status, 0 if unreachable."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class ApplyConflict(KubeError):
    """An unforced apply would overwrite fields that other field managers set."""

    def __init__(self, message: str, managers: frozenset[str], fields: frozenset[str]) -> None:
        super().__init__(message, 409)
        self.managers = managers
        self.fields = fields


class SecretMissing(NeurelayError):
    """A referenced Secret, or the key in it, does not exist."""


def path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    plural, namespaced = RESOURCES[(api_version, kind)]
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespaced:
        if namespace is None:
            raise ValueError(f"{kind} is namespaced: a namespace is required")
        root = f"{root}/namespaces/{namespace}"
    return f"{root}/{plural}" + (f"/{name}" if name else "")


class Kube:
    """Kubernetes API access for the operator; create with `await Kube.connect()`."""

    def __init__(self, api: client.ApiClient, log: logging.Logger) -> None:
        self._api = api
        self._log = log

    @classmethod
    async def connect(cls, log: logging.Logger, kubeconfig: str | None = None) -> Kube:
        """In-cluster service account when available, else the kubeconfig."""
        configuration = client.Configuration()
        # Requests beyond this many wait for a pooled connection instead of opening more:
        # each TLS connection costs a handshake and ~300 kB of buffers, and 1,000 Channels
        # applied at once would otherwise open a hundred.
        configuration.connection_pool_maxsize = MAX_CONNECTIONS
        if kubeconfig is None:
            try:
                config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration
                )
                return cls(client.ApiClient(configuration), log)
            except ConfigException:
                pass
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        return cls(client.ApiClient(configuration), log)

    async def close(self) -> None:
        await self._api.close()

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Manifest:
        try:
            result = await self._api.call_api(
                url,
                method,
                query_params=list((query or {}).items()),
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                response_types_map={200: "object", 201: "object", 202: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=30,
            )
        except ApiException as e:
            message = f"{method} {url}: {e.status} {_reason(e)}"
            conflicts = _conflicts(e) if e.status == 409 else []
            if conflicts:
                managers = frozenset(manager for manager, _ in conflicts)
                fields = frozenset(field for _, field in conflicts)
                raise ApplyConflict(message, managers, fields) from e
            raise KubeError(message, e.status) from e
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise KubeError(f"{method} {url}: {e!r}") from e
        return result if isinstance(result, dict) else {}

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> Manifest | None:
        try:
            return await self.request("GET", path(api_version, kind, namespace, name))
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None = None,
    ) -> list[Manifest]:
        query = {"labelSelector": label_selector} if label_selector else None
        result = await self.request("GET", path(api_version, kind, namespace), query=query)
        items: list[Manifest] = result.get("items", [])
        return items

    async def apply(self, manifest: Manifest, *, force: bool = True) -> Manifest:
        """Server-side apply: create `manifest`, or make the live object match it.

        Unforced, it raises `ApplyConflict` instead of taking over fields
        another client set to other values.
        """
        meta = manifest["metadata"]
        url = path(manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"])
        return await self.request(
            "PATCH",
            url,
            body=manifest,
            query={"fieldManager": FIELD_MANAGER, "force": str(force).lower()},
            content_type="application/apply-patch+yaml",
        )

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Delete; False when it did not exist.

        Background propagation: the call returns at once and the garbage
        collector removes any dependents afterwards (the objects deleted this
        way, a gateway's optional children, have none).
        """
        try:
            await self.request(
                "DELETE",
                path(api_version, kind, namespace, name),
                body={"propagationPolicy": "Background"},
            )
        except KubeError as e:
            if e.status == 404:
                return False
            raise
        return True

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> Manifest:
        """Merge-patch the status subresource (lists, such as conditions, are replaced)."""
        return await self.request(
            "PATCH",
            path(api_version, kind, namespace, name) + "/status",
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )

    async def secret_value(self, namespace: str, name: str, key: str) -> bytes:
        secret = await self.get("v1", "Secret", namespace, name)
        if secret is None:
            raise SecretMissing(f"Secret {namespace}/{name} does not exist")
        data = (secret.get("data") or {}).get(key)
        if data is None:
            raise SecretMissing(f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(data)


def digest(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()[:16]


_CONFLICT_WITH = re.compile(r'conflict with "([^"]*)"')


def _conflicts(e: ApiException) -> list[tuple[str, str]]:
    """(field manager, field) of each field an apply conflicted on, from the API's Status."""
    try:
        causes = json.loads(e.body or b"").get("details", {}).get("causes") or []
    except (TypeError, ValueError, AttributeError):
        return []
    found = []
    for cause in causes:
        if not isinstance(cause, dict) or cause.get("reason") != "FieldManagerConflict":
            continue
        match = _CONFLICT_WITH.search(str(cause.get("message", "")))
        if match:
            found.append((match.group(1), str(cause.get("field", ""))))
    return found


def _reason(e: ApiException) -> str:
    try:
        message = json.loads(e.body or b"").get("message")
    except (TypeError, ValueError, AttributeError):
        message = None
    return str(message or e.reason)
