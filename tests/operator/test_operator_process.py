"""The operator process: peering between replicas, metrics, liveness and a clean stop."""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
import time
import urllib.request
from pathlib import Path

from neurelay.embedded import EmbeddedNats
from neurelay.operator.logs import RoutineFilter
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


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a TCP socket listening on `port` (from /proc/net/tcp)."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        host, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            addresses.add(socket.inet_ntoa(bytes.fromhex(host)[::-1]))
    return addresses


def test_health_and_metrics_bind_the_addresses_given(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    assert listening_addresses(operator.liveness_port) == {"0.0.0.0"}  # the default
    assert listening_addresses(operator.metrics_port) == {"0.0.0.0"}
    log_path = Path(tempfile.mkdtemp(prefix="neurelay-operator-test-")) / "local.log"
    local = OperatorProcess(
        cluster,
        log_path,
        "--priority",
        "0",
        "--liveness-address",
        "127.0.0.1",
        "--metrics-address",
        "127.0.0.1",
    )
    try:
        eventually(local.alive, timeout=60)
        assert listening_addresses(local.liveness_port) == {"127.0.0.1"}
        assert listening_addresses(local.metrics_port) == {"127.0.0.1"}
    finally:
        local.stop()
        shutil.rmtree(log_path.parent, ignore_errors=True)


def _record(logger: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(logger, level, __file__, 1, message, None, None)


def test_kopfs_per_event_success_lines_are_kept_out_of_info() -> None:
    kopf_log = logging.getLogger("kopf.objects")
    saved = kopf_log.level
    routine = RoutineFilter()
    try:
        kopf_log.setLevel(logging.INFO)
        for message in (
            "Handler 'pause-watch' succeeded.",
            "Timer 'drift-check' succeeded.",
            "Resuming is processed: 1 succeeded; 0 failed.",
        ):
            assert not routine.filter(_record("kopf.objects", logging.INFO, message)), message
        for level, message in (
            (logging.INFO, "Creation is processed: 1 succeeded; 0 failed."),
            (logging.INFO, "Resuming is processed: 0 succeeded; 1 failed."),
            (logging.INFO, "Channel t/a: stream p_agent recreated"),
            (logging.WARNING, "Handler 'pause-watch' succeeded."),
            (logging.ERROR, "Handler 'reconcile' failed temporarily: boom"),
        ):
            assert routine.filter(_record("kopf.objects", level, message)), message
        kopf_log.setLevel(logging.DEBUG)
        assert routine.filter(_record("kopf.objects", logging.INFO, "Timer 'x' succeeded."))
    finally:
        kopf_log.setLevel(saved)
