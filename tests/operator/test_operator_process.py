"""The operator process: peering between replicas, metrics, liveness and a clean stop."""

from __future__ import annotations

import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

from neurelay.embedded import EmbeddedNats
from tests.operator.conftest import Cluster, OperatorProcess, eventually, gateway, secret


def test_metrics_endpoint_counts_reconciliations(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    assert "neurelay_operator_reconciliations_total" in text


def test_peering_object_exists_and_records_the_operator(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    peering = eventually(lambda: cluster.get("clusterkopfpeering", "neurelay-operator", "default"))
    assert peering is not None
    eventually(
        lambda: (cluster.get("clusterkopfpeering", "neurelay-operator", "default") or {}).get(
            "status"
        )
    )


def test_a_second_replica_with_lower_priority_stands_by_and_stops_cleanly(
    cluster: Cluster, operator: OperatorProcess, ns: str, nats_server: EmbeddedNats
) -> None:
    log_path = Path(tempfile.mkdtemp(prefix="neurelay-operator-test-")) / "standby.log"
    standby = OperatorProcess(cluster, log_path, "--priority", "0")
    try:
        eventually(standby.alive, timeout=60)
        peers = eventually(
            lambda: (
                len(cluster.must_get("clusterkopfpeering", "neurelay-operator", "")["status"]) >= 2
            )
        )
        assert peers
        cluster.apply(secret("jwt", ns, secret="s"), gateway("edge", ns, nats_server.url))
        eventually(lambda: cluster.get("configmap", "edge-config", ns))  # the active one acted
        log = log_path.read_text()
        assert "Resuming operations" not in log
        assert ns not in log  # the standby never handled the new gateway
        started = time.monotonic()
        standby.process.terminate()
        assert standby.process.wait(30) == 0
        assert time.monotonic() - started < 30
    finally:
        standby.stop()
        shutil.rmtree(log_path.parent, ignore_errors=True)
