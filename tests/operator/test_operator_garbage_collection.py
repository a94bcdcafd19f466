"""Deleting a RealtimeGateway removes its children through owner references.

The operator has no delete handler for gateways: it relies on the owner
references it sets, and on Kubernetes' garbage collector, which the test
control plane runs (kube-controller-manager with only that controller).
"""

from __future__ import annotations

import pytest

from neurelay.embedded import EmbeddedNats
from tests.operator.conftest import Cluster, eventually, gateway, secret

GW = "realtimegateway"

CHILDREN = [
    ("configmap", "edge-config"),
    ("deployment", "edge"),
    ("service", "edge"),
    ("ingress", "edge"),
    ("horizontalpodautoscaler", "edge"),
    ("poddisruptionbudget", "edge"),
]


def test_deleting_a_gateway_garbage_collects_all_its_children(
    cluster: Cluster, ns: str, nats_server: EmbeddedNats
) -> None:
    if not cluster.cp.garbage_collecting:
        pytest.skip("no kube-controller-manager in the control plane bin dir: no garbage collector")
    cluster.apply(
        secret("jwt", ns, secret="s3cret"),
        gateway(
            "edge",
            ns,
            nats_server.url,
            ingress={"host": "rt.example.com"},
            autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 4},
            podDisruptionBudget={"enabled": True, "maxUnavailable": 1},
        ),
    )
    uid = cluster.must_get(GW, "edge", ns)["metadata"]["uid"]

    def all_children_exist() -> bool:
        return all(cluster.get(kind, name, ns) is not None for kind, name in CHILDREN)

    eventually(all_children_exist, timeout=60)
    for kind, name in CHILDREN:
        owners = cluster.must_get(kind, name, ns)["metadata"]["ownerReferences"]
        assert [o["uid"] for o in owners] == [uid], kind

    cluster.delete(GW, "edge", ns, wait=True)
    assert cluster.get(GW, "edge", ns) is None

    def all_children_gone() -> bool:
        left = [f"{kind}/{name}" for kind, name in CHILDREN if cluster.get(kind, name, ns)]
        assert not left, f"not garbage-collected yet: {left}"
        return True

    # Generous: the collector may first need a discovery resync (every 30s) to see the CRD.
    eventually(all_children_gone, timeout=120, interval=0.5)
