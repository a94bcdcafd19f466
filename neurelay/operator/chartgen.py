"""Keeps the Helm chart in step with the CRDs: its crds/ copies and its values.schema.json.

The schema of `gateway.spec` and of `gateway.channels[]` is taken from the
CRDs' own OpenAPI schemas (themselves generated from the pydantic models),
so the chart validates a gateway exactly as the API server will. Run
`python -m neurelay.operator.chartgen`; a test fails when the chart is stale.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
CHART = ROOT / "charts" / "neurelay"
CHART_CRDS = ("realtimegateways.yaml", "channels.yaml", "kopf-peering.yaml")

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_OBJECT = {"type": "object"}
_ARRAY = {"type": "array"}
_NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}


def _spec_schema(crd_file: str) -> dict[str, Any]:
    documents = list(yaml.safe_load_all((CRDS / crd_file).read_text(encoding="utf-8")))
    crd = next(d for d in documents if d and d.get("kind") == "CustomResourceDefinition")
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    spec: dict[str, Any] = _json_schema(
        copy.deepcopy(version["schema"]["openAPIV3Schema"]["properties"]["spec"])
    )
    return spec


def _json_schema(node: Any) -> Any:
    """OpenAPI 3.0 (as in CRDs) to JSON Schema draft-07, which Helm validates values with."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _json_schema(value) for key, value in node.items()}
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if converted.get(exclusive) is True:
            converted[exclusive] = converted.pop(bound)
        elif converted.get(exclusive) is False:
            del converted[exclusive]
    if converted.pop("nullable", False) and "type" in converted:
        converted["type"] = [converted["type"], "null"]
    return converted


def _section(properties: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "properties": properties,
    }


def values_schema() -> dict[str, Any]:
    gateway_spec = _spec_schema("realtimegateways.yaml")
    # The chart fills in the image; everything else is as the API server will check it.
    gateway_spec["required"] = [r for r in gateway_spec.get("required", []) if r != "image"]
    # The NATS URL has no sensible default; the template asks for it by name when a gateway
    # is declared, and a release without one (gateway.enabled=false) needs none.
    nats = gateway_spec["properties"]["nats"]
    nats["required"] = [r for r in nats.get("required", []) if r != "url"]
    channel = _spec_schema("channels.yaml")
    channel["properties"].pop("gateway", None)
    channel["required"] = [r for r in channel.get("required", []) if r != "gateway"]
    port = {"type": "integer", "minimum": 1, "maximum": 65535}
    address = {"type": "string", "minLength": 1, "maxLength": 253, "pattern": r"^[^\s/]+$"}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Values of the neurelay chart",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "image": _section(
                {
                    "repository": {"type": "string", "minLength": 1},
                    "tag": {"type": "string"},
                    "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                },
                "The image running both the gateway and the operator.",
            ),
            "imagePullSecrets": {
                "type": "array",
                "items": _section({"name": {"type": "string", "minLength": 1}}, "A Secret."),
            },
            "nameOverride": {"type": "string", "maxLength": 63},
            "fullnameOverride": {"type": "string", "maxLength": 63},
            "commonLabels": _STRING_MAP,
            "commonAnnotations": _STRING_MAP,
            "operator": _section(
                {
                    "replicas": {"type": "integer", "minimum": 1, "maximum": 10},
                    "watchNamespace": {"anyOf": [{"const": ""}, _NAME]},
                    "peering": _NAME,
                    "logLevel": {"enum": ["DEBUG", "INFO", "WARNING"]},
                    "livenessAddress": address,
                    "livenessPort": port,
                    "metricsAddress": address,
                    "metricsPort": port,
                    "resources": _section(
                        {"requests": _OBJECT, "limits": _OBJECT}, "Container resources."
                    ),
                    "podAnnotations": _STRING_MAP,
                    "podLabels": _STRING_MAP,
                    "priorityClassName": {"type": "string"},
                    "nodeSelector": _STRING_MAP,
                    "tolerations": _ARRAY,
                    "affinity": _OBJECT,
                    "topologySpreadConstraints": _ARRAY,
                    "podSecurityContext": _OBJECT,
                    "securityContext": _OBJECT,
                },
                "The operator Deployment.",
            ),
            "serviceAccount": _section(
                {
                    "create": {"type": "boolean"},
                    "name": {"type": "string"},
                    "annotations": _STRING_MAP,
                },
                "The operator's ServiceAccount.",
            ),
            "rbac": _section({"create": {"type": "boolean"}}, "The operator's roles."),
            "metrics": _section(
                {
                    "serviceMonitor": _section(
                        {
                            "enabled": {"type": "boolean"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "labels": _STRING_MAP,
                        },
                        "Prometheus Operator ServiceMonitors.",
                    ),
                    "grafanaDashboard": _section(
                        {"enabled": {"type": "boolean"}, "labels": _STRING_MAP},
                        "A ConfigMap with the Grafana dashboard of the gateways.",
                    ),
                },
                "Metrics scraping.",
            ),
            "gateway": _section(
                {
                    "enabled": {"type": "boolean"},
                    "name": _NAME,
                    "spec": gateway_spec,
                    "channels": {"type": "array", "items": channel},
                },
                "A RealtimeGateway and its Channels declared with the release.",
            ),
        },
    }


def expected_files() -> dict[Path, str]:
    files = {
        CHART / "crds" / name: (CRDS / name).read_text(encoding="utf-8") for name in CHART_CRDS
    }
    files[CHART / "values.schema.json"] = json.dumps(values_schema(), indent=2) + "\n"
    return files


def main() -> int:
    for path, text in expected_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
