"""A thousand Channels on one gateway, against the real API server and NATS, as a user applies them.

A dedicated operator process runs with the production defaults (30 s drift
interval, INFO logs) and a peering priority above the test suite's shared
operator, which therefore stands by meanwhile. The test applies one gateway
and 1,000 Channels with one `kubectl apply`, waits until every Channel is
Ready and the gateway's configuration lists them all, lets the operator idle
for two drift intervals, then deletes every Channel with one `kubectl
delete` and waits until they and their streams are gone. It prints the
seconds to Ready and to deleted, the idle CPU share and the RSS of the
operator process (docs/performance.md quotes them) and checks the outcome,
not the timings.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
import yaml

from neurelay.embedded import EmbeddedNats
from neurelay.operator.render import subject_prefix
from neurelay.operator.settings import OperatorSettings
from tests.operator.conftest import Cluster, OperatorProcess, channel, eventually, gateway, secret

CHANNELS = 1000
IDLE_SECONDS = 2 * OperatorSettings.drift_interval_seconds
# Above any random priority (1..1,000,000) of the shared operator: it stands by meanwhile.
PRIORITY = 2_000_000_000
RSS_LIMIT_BYTES = 250 * 2**20
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def scale_operator(cluster: Cluster) -> Iterator[OperatorProcess]:
    log_path = Path(tempfile.mkdtemp(prefix="neurelay-operator-scale-")) / "operator.log"
    process = OperatorProcess(
        cluster,
        log_path,
        "--priority",
        str(PRIORITY),
        "--drift-interval",
        str(OperatorSettings.drift_interval_seconds),
        "--retry-max",
        str(OperatorSettings.retry_max_seconds),
        "--log-level",
        "INFO",
    )
    try:
        eventually(process.alive, timeout=60)
        yield process
    finally:
        process.stop()
        print(f"--- scale operator log {log_path} (tail) ---\n{process.tail(40)}")
        shutil.rmtree(log_path.parent, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def ready_channels(cluster: Cluster, ns: str) -> int:
    items = json.loads(cluster.kubectl("get", "rtch", "-n", ns, "-o", "json"))["items"]
    return sum(
        1
        for item in items
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (item.get("status") or {}).get("conditions") or []
        )
    )


def remaining_channels(cluster: Cluster, ns: str) -> int:
    names = cluster.kubectl("get", "rtch", "-n", ns, "-o", "name")
    return len(names.split())


def stream_count(url: str, prefix: str) -> int:
    async def count() -> int:
        nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
        try:
            js = nc.jetstream(timeout=10)
            names = await js.streams_info()
            total = [info.config.name for info in names]
            offset = len(names)
            while len(names) == 256:
                names = await js.streams_info(offset=offset)
                total += [info.config.name for info in names]
                offset += len(names)
            return sum(1 for name in total if name and name.startswith(prefix))
        finally:
            await nc.close()

    return asyncio.run(count())


def test_a_thousand_channels_become_ready_idle_cheaply_and_go_with_their_streams(
    cluster: Cluster,
    nats_server: EmbeddedNats,
    scale_operator: OperatorProcess,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ns = "scale-thousand"
    cluster.kubectl("create", "namespace", ns)
    prefix = subject_prefix(ns, "edge") + "_"
    channels = [
        channel(f"c{i:04d}", ns, "edge", f"c{i:04d}", deletionPolicy="Delete")
        for i in range(CHANNELS)
    ]
    manifests = [secret("jwt", ns, secret="s"), gateway("edge", ns, nats_server.url), *channels]
    documents = "\n---\n".join(yaml.safe_dump(m) for m in manifests)
    pid = scale_operator.process.pid

    started, cpu_started = time.monotonic(), cpu_seconds(pid)
    cluster.cp.kubectl("apply", "-f", "-", input=documents, timeout=600)
    applied = time.monotonic() - started
    eventually(lambda: ready_channels(cluster, ns) == CHANNELS, timeout=600, interval=2.0)
    to_ready, cpu_to_ready = time.monotonic() - started, cpu_seconds(pid) - cpu_started

    def served() -> int:
        config_map = cluster.must_get("configmap", "edge-config", ns)
        return len(yaml.safe_load(config_map["data"]["gateway.yaml"])["namespaces"])

    eventually(lambda: served() == CHANNELS, timeout=120, interval=1.0)
    assert stream_count(nats_server.url, prefix) == CHANNELS

    time.sleep(5)  # the last status writes settle
    log_size = scale_operator.log_path.stat().st_size
    cpu_before, idle_started = cpu_seconds(pid), time.monotonic()
    time.sleep(IDLE_SECONDS)
    idle_cpu = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - idle_started)
    rss = rss_bytes(pid)
    idle_log = scale_operator.log_path.read_text(errors="replace")[log_size:]

    started, cpu_started = time.monotonic(), cpu_seconds(pid)
    cluster.cp.kubectl("delete", "rtch", "--all", "-n", ns, "--wait=false", timeout=600)
    deleted = time.monotonic() - started
    eventually(lambda: remaining_channels(cluster, ns) == 0, timeout=600, interval=1.0)
    eventually(lambda: stream_count(nats_server.url, prefix) == 0, timeout=120, interval=1.0)
    to_deleted, cpu_to_delete = time.monotonic() - started, cpu_seconds(pid) - cpu_started
    cluster.kubectl("delete", "namespace", ns, "--wait=false")

    with capsys.disabled():  # the figures belong in every run's output, CI's too
        print(
            f"\n{CHANNELS} Channels on one gateway: applied in {applied:.1f} s, all Ready "
            f"{to_ready:.1f} s after kubectl apply (operator CPU {cpu_to_ready:.1f} s); deleted "
            f"with their streams {to_deleted:.1f} s after kubectl delete (which took "
            f"{deleted:.1f} s; operator CPU {cpu_to_delete:.1f} s); idle operator over "
            f"{IDLE_SECONDS:.0f} s: {100 * idle_cpu:.2f} % of a core, RSS {rss / 2**20:.0f} MiB, "
            f"{len(idle_log.splitlines())} log lines"
        )
    assert rss <= RSS_LIMIT_BYTES
    # Idle means nothing changes: no line but problems (from other tests' leftovers whose
    # NATS is gone, in a full run), and none of kopf's per-handler lines.
    routine = [line for line in idle_log.splitlines() if " INFO " in line or " DEBUG " in line]
    assert routine == [], idle_log[:2000]
