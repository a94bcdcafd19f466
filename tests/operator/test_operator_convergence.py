"""Declared stays true: children deleted or changed behind the operator's back come back, a
rotated Secret rolls the gateway, and status says when a child cannot be restored."""

from __future__ import annotations

from typing import Any

import pytest

from neurelay.embedded import EmbeddedNats
from tests.operator.conftest import Cluster, eventually, gateway, secret
from tests.operator.test_operator_gateways import gateway_config, make_ready, restart_hash

GW = "realtimegateway"

CHILDREN = [
    ("configmap", "edge-config"),
    ("service", "edge"),
    ("ingress", "edge"),
    ("horizontalpodautoscaler", "edge"),
    ("poddisruptionbudget", "edge"),
    ("deployment", "edge"),
]


def full_gateway(ns: str, url: str) -> dict[str, Any]:
    return gateway(
        "edge",
        ns,
        url,
        ingress={"host": "rt.example.com"},
        autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 4},
    )


def restored_events(cluster: Cluster, ns: str) -> list[str]:
    return [e["message"] for e in cluster.events(ns, "edge") if e["reason"] == "ChildRestored"]


@pytest.mark.parametrize(("kind", "name"), CHILDREN)
def test_a_deleted_child_comes_back_and_an_event_says_so(
    cluster: Cluster, ns: str, nats_server: EmbeddedNats, kind: str, name: str
) -> None:
    cluster.apply(secret("jwt", ns, secret="s"), full_gateway(ns, nats_server.url))
    before = eventually(lambda: cluster.get(kind, name, ns))
    cluster.delete(kind, name, ns, wait=True)
    after = eventually(lambda: cluster.get(kind, name, ns))
    assert after["metadata"]["uid"] != before["metadata"]["uid"]
    assert eventually(
        lambda: any("had been deleted; re-created" in m for m in restored_events(cluster, ns))
    )
    cluster.wait_condition(GW, "edge", ns, "Degraded", "False", "AsExpected")


def test_children_changed_by_hand_are_restored_but_the_autoscalers_choice_is_kept(
    cluster: Cluster, ns: str, nats_server: EmbeddedNats
) -> None:
    cluster.apply(secret("jwt", ns, secret="s"), full_gateway(ns, nats_server.url))
    eventually(lambda: cluster.get("poddisruptionbudget", "edge", ns))
    declared = cluster.must_get("configmap", "edge-config", ns)["data"]
    cluster.patch("configmap", "edge-config", ns, {"data": {"gateway.yaml": "limits: {}\n"}})
    cluster.patch("service", "edge", ns, {"spec": {"ports": [{"name": "http", "port": 81}]}})
    cluster.patch("poddisruptionbudget", "edge", ns, {"spec": {"maxUnavailable": 3}})
    eventually(lambda: cluster.must_get("configmap", "edge-config", ns)["data"] == declared)
    eventually(lambda: cluster.must_get("service", "edge", ns)["spec"]["ports"][0]["port"] == 80)
    eventually(
        lambda: cluster.must_get("poddisruptionbudget", "edge", ns)["spec"]["maxUnavailable"] == 1
    )
    expected = ("ConfigMap edge-config", "Service edge", "PodDisruptionBudget edge")
    eventually(
        lambda: all(
            any(f"{title} had been changed by kubectl" in m for m in restored_events(cluster, ns))
            for title in expected
        )
    )
    # The autoscaler owns the replica count: scaling is not drift, nothing is reverted.
    cluster.kubectl("scale", "deployment/edge", "-n", ns, "--replicas=3")
    cluster.patch(GW, "edge", ns, {"spec": {"limits": {"connectionsPerUser": 7}}})
    eventually(lambda: gateway_config(cluster, ns).limits.connections_per_user == 7)
    assert cluster.must_get("deployment", "edge", ns)["spec"]["replicas"] == 3
    assert not any("Deployment" in m for m in restored_events(cluster, ns))


def test_rotating_the_jwt_secret_rolls_the_gateway_pods_by_itself(
    cluster: Cluster, ns: str, nats_server: EmbeddedNats
) -> None:
    cluster.apply(secret("jwt", ns, secret="one"), gateway("edge", ns, nats_server.url))
    eventually(lambda: cluster.get("deployment", "edge", ns))
    before = restart_hash(cluster, ns)
    cluster.apply(secret("jwt", ns, secret="two"))  # nothing else changes
    eventually(lambda: restart_hash(cluster, ns) != before)
    rotated = restart_hash(cluster, ns)
    cluster.apply(secret("unrelated", ns, secret="x"))
    cluster.apply(secret("jwt", ns, secret="two"))  # same content: no roll
    cluster.patch(GW, "edge", ns, {"spec": {"limits": {"connectionsPerUser": 4}}})
    eventually(lambda: gateway_config(cluster, ns).limits.connections_per_user == 4)
    assert restart_hash(cluster, ns) == rotated


def test_status_says_which_child_is_missing_while_it_cannot_be_re_created(
    cluster: Cluster, ns: str, nats_server: EmbeddedNats
) -> None:
    cluster.apply(secret("jwt", ns, secret="s"), gateway("edge", ns, nats_server.url))
    eventually(lambda: cluster.get("deployment", "edge", ns))
    make_ready(cluster, ns, 2)
    cluster.wait_condition(GW, "edge", ns, "Ready", "True")
    # An admission policy refuses every new ConfigMap in this namespace.
    policy = f"no-configmaps-in-{ns}"
    cluster.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["configmaps"],
                        }
                    ]
                },
                "validations": [{"expression": "false", "message": "no new ConfigMaps here"}],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy},
            "spec": {
                "policyName": policy,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}
                },
            },
        },
    )

    def refused() -> bool:
        probe = cluster.cp.kubectl(
            "create", "configmap", "probe", "-n", ns, "--dry-run=server", check=False
        )
        return "no new ConfigMaps here" in probe.stderr

    eventually(refused)
    cluster.delete("configmap", "edge-config", ns, wait=True)
    condition = cluster.wait_condition(GW, "edge", ns, "Ready", "False", "ApiError")
    assert "missing: ConfigMap edge-config" in condition["message"]
    assert cluster.condition(GW, "edge", ns, "Degraded")["status"] == "True"
    cluster.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", policy)
    eventually(lambda: cluster.get("configmap", "edge-config", ns))
    cluster.wait_condition(GW, "edge", ns, "Degraded", "False", "AsExpected")
    cluster.wait_condition(GW, "edge", ns, "Ready", "True")
