"""The Helm chart: lint, rendering across a matrix of values, schema validation, CRDs in sync."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from neurelay.operator import chartgen

CHART = Path(__file__).resolve().parents[2] / "charts" / "neurelay"
NATS = ["--set", "gateway.spec.nats.url=nats://nats.messaging:4222"]
MATRIX = {
    "defaults": [],
    "ingress": [
        "--set",
        "gateway.spec.ingress.host=rt.example.com",
        "--set",
        "gateway.spec.ingress.className=nginx",
        "--set",
        "gateway.spec.ingress.tlsSecretName=rt-tls",
    ],
    "autoscaling": [
        "--set",
        "gateway.spec.autoscaling.enabled=true",
        "--set",
        "gateway.spec.autoscaling.maxReplicas=6",
    ],
    "no-gateway": ["--set", "gateway.enabled=false"],
    "one-namespace": [
        "--set",
        "operator.watchNamespace=team-a",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.grafanaDashboard.enabled=true",
        "--set",
        "operator.metricsAddress=127.0.0.1",
    ],
}


def helm(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "helm"), *args], capture_output=True, text=True, timeout=120
    )


def render(bin_dir: Path, *values: str) -> list[dict[str, Any]]:
    result = helm(
        bin_dir,
        "template",
        "rt",
        str(CHART),
        "--namespace",
        "neurelay-system",
        "--kube-version",
        "1.37.2",
        *NATS,
        *values,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_chart_crds_and_values_schema_are_generated_from_the_models():
    for path, text in chartgen.expected_files().items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path} is stale: run python -m neurelay.operator.chartgen"
        )


@pytest.mark.parametrize("case", MATRIX)
def test_helm_lint_passes(control_plane_bin: Path, case: str):
    result = helm(control_plane_bin, "lint", "--strict", str(CHART), *NATS, *MATRIX[case])
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_gateway_without_a_nats_url_is_refused_with_a_clear_message(control_plane_bin: Path):
    result = helm(control_plane_bin, "template", "rt", str(CHART), "--kube-version", "1.37.2")
    assert result.returncode != 0
    assert "gateway.spec.nats.url is required" in result.stderr


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        (["--set", "operator.replicas=0"], "replicas"),
        (["--set", "operator.bogus=1"], "bogus"),
        (["--set", "gateway.spec.limits.messagesPerSecond=-1"], "messagesPerSecond"),
        (["--set", "gateway.spec.auth.algorithm=none"], "algorithm"),
        (["--set", "gateway.channels[0].history.replicas=2"], "replicas"),
        (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
    ],
)
def test_values_schema_refuses_bad_values(control_plane_bin: Path, values: list[str], complaint):
    result = helm(
        control_plane_bin, "template", "rt", str(CHART), "--kube-version", "1.37.2", *NATS, *values
    )
    assert result.returncode != 0
    assert complaint in result.stderr


def test_defaults_render_a_hardened_two_replica_operator_and_the_default_platform(
    control_plane_bin: Path,
):
    objects = render(control_plane_bin)
    (deployment,) = by_kind(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["args"][0] == "operator"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "--liveness-address=0.0.0.0" in container["args"]
    assert "--metrics-address=0.0.0.0" in container["args"]
    (gateway,) = by_kind(objects, "RealtimeGateway")
    assert gateway["spec"]["nats"]["url"] == "nats://nats.messaging:4222"
    assert gateway["spec"]["image"] == "ghcr.io/neurectomy/neurelay:0.1.0"
    channels = by_kind(objects, "Channel")
    assert sorted(c["spec"]["namespace"] for c in channels) == [
        "agent",
        "conversation",
        "metrics",
        "system",
        "user",
    ]
    assert {c["spec"]["gateway"] for c in channels} == {"neurelay"}
    assert by_kind(objects, "ClusterRole")
    assert by_kind(objects, "Service")[0]["spec"]["ports"][0]["name"] == "metrics"
    assert not by_kind(objects, "ServiceMonitor")


def test_watching_one_namespace_uses_a_role_there_and_service_monitors_are_optional(
    control_plane_bin: Path,
):
    objects = render(control_plane_bin, *MATRIX["one-namespace"])
    (role,) = by_kind(objects, "Role")
    assert role["metadata"]["namespace"] == "team-a"
    (deployment,) = by_kind(objects, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args
    assert "--metrics-address=127.0.0.1" in args
    assert len(by_kind(objects, "ServiceMonitor")) == 2
    (dashboard,) = [
        c for c in by_kind(objects, "ConfigMap") if "dashboard" in c["metadata"]["name"]
    ]
    panels = json.loads(dashboard["data"]["neurelay-gateways.json"])["panels"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for metric in (
        "neurelay_connections",
        "neurelay_messages_out_total",
        "neurelay_fanout_seconds_bucket",
        "neurelay_rejections_total",
    ):
        assert metric in exprs


def test_no_gateway_renders_only_the_operator(control_plane_bin: Path):
    objects = render(control_plane_bin, *MATRIX["no-gateway"])
    assert not by_kind(objects, "RealtimeGateway")
    assert not by_kind(objects, "Channel")
