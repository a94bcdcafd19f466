"""The chart against a real API server: every rendered object validates, and install,
upgrade and uninstall work with the operator running under the chart's own ServiceAccount
and RBAC (so the roles are proven sufficient: the operator logs no refusal)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import nats
import pytest
import yaml

from neurelay.embedded import EmbeddedNats, free_port
from tests.chart.test_chart_rendering import CHART, MATRIX, render
from tests.support.control_plane import ControlPlane

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]
T = TypeVar("T")
RELEASE_NS = "neurelay-system"


def eventually(check: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def cluster(control_plane_bin: Path) -> Iterator[ControlPlane]:
    with ControlPlane(control_plane_bin) as cp:
        cp.kubectl("apply", "-f", str(CHART / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        yield cp


@pytest.mark.parametrize("case", MATRIX)
def test_every_rendered_object_is_accepted_by_the_api_server(
    cluster: ControlPlane, control_plane_bin: Path, case: str
):
    objects = render(control_plane_bin, *MATRIX[case])
    # No Prometheus Operator here: its ServiceMonitor CRD is not installed, so those two
    # objects are checked by rendering only.
    checkable = [o for o in objects if o["kind"] != "ServiceMonitor"]
    for namespace in {RELEASE_NS, "team-a"}:
        cluster.kubectl("create", "namespace", namespace, check=False)
    result = cluster.kubectl(
        "apply",
        "--dry-run=server",
        "-f",
        "-",
        input=yaml.safe_dump_all(checkable),
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _streams(url: str) -> set[str]:
    async def names() -> set[str]:
        nc = await nats.connect(url)
        try:
            return {name async for name in _stream_names(nc.jetstream())}
        finally:
            await nc.close()

    import asyncio

    return asyncio.run(names())


async def _stream_names(js: Any) -> Any:
    for name in await js.streams_info():
        yield name.config.name


def _operator_kubeconfig(cluster: ControlPlane, directory: Path) -> Path:
    token = cluster.kubectl(
        "create", "token", "rt-neurelay-operator", "-n", RELEASE_NS, "--duration=1h"
    ).stdout.strip()
    config = yaml.safe_load(cluster.kubeconfig_path.read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    path = directory / "operator-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def _operator_args(cluster: ControlPlane) -> list[str]:
    deployment = json.loads(
        cluster.kubectl(
            "get", "deployment", "rt-neurelay-operator", "-n", RELEASE_NS, "-o", "json"
        ).stdout
    )
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    # No kubelet runs here; the same arguments run as a local process, on free ports.
    ports = {"--liveness-port": free_port(), "--metrics-port": free_port()}
    return [
        f"{a.split('=')[0]}={ports[a.split('=')[0]]}" if a.split("=")[0] in ports else a
        for a in args
    ]


def test_install_upgrade_uninstall_with_the_operator_under_the_charts_rbac(
    cluster: ControlPlane,
):
    workdir = Path(tempfile.mkdtemp(prefix="neurelay-chart-"))
    with EmbeddedNats() as nats_server:
        cluster.kubectl("create", "namespace", RELEASE_NS, check=False)
        cluster.kubectl(
            "create",
            "secret",
            "generic",
            "neurelay-jwt",
            "-n",
            RELEASE_NS,
            "--from-literal=secret=" + "k" * 40,
        )
        install = cluster.helm(
            "install",
            "rt",
            str(CHART),
            "-n",
            RELEASE_NS,
            "--set",
            f"gateway.spec.nats.url={nats_server.url}",
            check=False,
        )
        assert install.returncode == 0, install.stderr
        log_path = workdir / "operator.log"
        with log_path.open("ab") as log:
            operator = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "neurelay.cli",
                    *_operator_args(cluster),
                    "--kubeconfig",
                    str(_operator_kubeconfig(cluster, workdir)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            config_map = eventually(lambda: _get(cluster, "configmap", "neurelay-config"))
            gateway_yaml = yaml.safe_load(config_map["data"]["gateway.yaml"])
            assert set(gateway_yaml["namespaces"]) == {
                "agent",
                "user",
                "conversation",
                "system",
                "metrics",
            }
            # Applied after the ConfigMap, which may already list every Channel.
            eventually(lambda: _get(cluster, "deployment", "neurelay"))
            eventually(
                lambda: (
                    {"agent", "user", "conversation", "system"}
                    <= {name.rsplit("_", 1)[-1] for name in _streams(nats_server.url)}
                )
            )

            upgrade = cluster.helm(
                "upgrade",
                "rt",
                str(CHART),
                "-n",
                RELEASE_NS,
                "--reuse-values",
                "--set",
                "gateway.spec.limits.messagesPerSecond=250",
                check=False,
            )
            assert upgrade.returncode == 0, upgrade.stderr

            def limit_applied() -> bool:
                data = _get(cluster, "configmap", "neurelay-config")["data"]["gateway.yaml"]
                return yaml.safe_load(data)["limits"]["messages_per_second"] == 250

            eventually(limit_applied)

            # The documented uninstall: the release's resources first, while the operator
            # can still run their finalizers, then the release.
            cluster.kubectl(
                "delete",
                "realtimegateways,channels",
                "-n",
                RELEASE_NS,
                "-l",
                "app.kubernetes.io/instance=rt",
                "--wait",
                "--timeout=120s",
            )
            remaining = {name.rsplit("_", 1)[-1] for name in _streams(nats_server.url)}
            assert "agent" in remaining  # deletionPolicy Retain
            assert "metrics" not in remaining  # no history: never had a stream
            # In a cluster the release's own Deployment is what stops; here, the process.
            operator.terminate()
            operator.wait(30)
            uninstall = cluster.helm("uninstall", "rt", "-n", RELEASE_NS, "--wait", check=False)
            assert uninstall.returncode == 0, uninstall.stderr
            assert _get(cluster, "deployment", "rt-neurelay-operator") is None
        finally:
            operator.terminate()
            operator.wait(30)
        log_text = log_path.read_text(errors="replace")
        assert "Forbidden" not in log_text, log_text[-3000:]
        assert " 403" not in log_text, log_text[-3000:]


def _get(cluster: ControlPlane, kind: str, name: str) -> Any:
    result = cluster.kubectl("get", kind, name, "-n", RELEASE_NS, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None
