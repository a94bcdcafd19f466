"""Fixtures of the operator tests: a real control plane, the CRDs, NATS and the operator process.

Everything expensive is session-scoped and started only when a test asks
for it, so the unit tests in this directory need no cluster. Each cluster
test gets a Kubernetes namespace of its own. The operator runs as a
subprocess (`python -m neurelay.operator`) against the control plane with
short intervals; its log is printed when a test fails.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import nats
import pytest
import yaml
from nats.js.api import StreamInfo

from neurelay.embedded import EmbeddedNats, free_port
from tests.support.control_plane import ControlPlane, ensure_built

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")

DRIFT_INTERVAL = 1.0
RETRY_MAX = 1.5


def eventually(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.2) -> T:
    """Poll `check` until it returns something truthy (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except AssertionError as e:
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s; last: {last!r}")
        time.sleep(interval)


class Cluster:
    """kubectl, as the tests use it; objects are plain dictionaries."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.cp.kubectl(*args, input=input, check=check).stdout

    def try_apply(self, *manifests: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        documents = "\n---\n".join(yaml.safe_dump(m) for m in manifests)
        return self.cp.kubectl("apply", "-f", "-", input=documents, check=False)

    def apply(self, *manifests: dict[str, Any]) -> None:
        result = self.try_apply(*manifests)
        assert result.returncode == 0, result.stderr

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        result = self.cp.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if result.returncode != 0:
            assert "NotFound" in result.stderr, result.stderr
            return None
        loaded: dict[str, Any] = json.loads(result.stdout)
        return loaded

    def must_get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        obj = self.get(kind, name, namespace)
        assert obj is not None, f"{kind} {namespace}/{name} does not exist"
        return obj

    def patch(
        self, kind: str, name: str, namespace: str, patch: dict[str, Any], *extra: str
    ) -> None:
        self.kubectl(
            "patch", kind, name, "-n", namespace, "--type=merge", "-p", json.dumps(patch), *extra
        )

    def delete(self, kind: str, name: str, namespace: str, wait: bool = False) -> None:
        self.kubectl("delete", kind, name, "-n", namespace, f"--wait={str(wait).lower()}")

    def row(self, kind: str, name: str, namespace: str) -> dict[str, str]:
        """`kubectl get` of one object as {COLUMN: value}; blank columns are ''."""
        header, line = self.kubectl("get", kind, name, "-n", namespace).splitlines()
        starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
        ends = [*starts[1:], None]
        return {
            header[start:end].strip(): line[start:end].strip()
            for start, end in zip(starts, ends, strict=True)
        }

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        items = json.loads(self.kubectl("get", "events", "-n", namespace, "-o", "json"))["items"]
        return [e for e in items if e["involvedObject"].get("name") == name]

    def condition(self, kind: str, name: str, namespace: str, type_: str) -> dict[str, Any] | None:
        obj = self.get(kind, name, namespace) or {}
        for condition in (obj.get("status") or {}).get("conditions") or []:
            if condition["type"] == type_:
                found: dict[str, Any] = condition
                return found
        return None

    def wait_condition(
        self,
        kind: str,
        name: str,
        namespace: str,
        type_: str,
        status: str,
        reason: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        def matches() -> dict[str, Any] | None:
            condition = self.condition(kind, name, namespace, type_)
            if condition is None or condition["status"] != status:
                return None
            if reason is not None and condition["reason"] != reason:
                return None
            return condition

        return eventually(matches, timeout)


class JetStream:
    """Synchronous access to a NATS server's streams, for assertions."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _run(self, action: Callable[[Any], Any]) -> Any:
        async def main() -> Any:
            nc = await nats.connect(self.url, connect_timeout=2, allow_reconnect=False)
            try:
                return await action(nc.jetstream(timeout=5))
            finally:
                await nc.close()

        return asyncio.run(main())

    def info(self, name: str) -> StreamInfo | None:
        async def action(js: Any) -> StreamInfo | None:
            try:
                info: StreamInfo = await js.stream_info(name)
                return info
            except nats.js.errors.NotFoundError:
                return None

        result: StreamInfo | None = self._run(action)
        return result

    def add(self, config: Any) -> None:
        async def action(js: Any) -> None:
            await js.add_stream(config)

        self._run(action)

    def update(self, config: Any) -> None:
        async def action(js: Any) -> None:
            await js.update_stream(config)

        self._run(action)

    def delete(self, name: str) -> None:
        async def action(js: Any) -> None:
            await js.delete_stream(name)

        self._run(action)

    def publish(self, subject: str, payload: bytes) -> None:
        async def action(js: Any) -> None:
            await js.publish(subject, payload)

        self._run(action)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    with ControlPlane(ensure_built()) as cp:
        yield cp


@pytest.fixture(scope="session")
def cluster(control_plane: ControlPlane) -> Cluster:
    """The control plane with crds/ installed and established."""
    control_plane.kubectl("apply", "-f", str(REPO / "crds"))
    control_plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    return Cluster(control_plane)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[EmbeddedNats]:
    with EmbeddedNats() as server:
        yield server


@pytest.fixture(scope="session")
def jetstream(nats_server: EmbeddedNats) -> JetStream:
    return JetStream(nats_server.url)


class OperatorProcess:
    def __init__(self, cluster: Cluster, log_path: Path, *extra: str) -> None:
        self.log_path = log_path
        self.liveness_port = free_port()
        self.metrics_port = free_port()
        env = {**os.environ, **cluster.cp.env(), "PYTHONPATH": str(REPO)}
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "neurelay.operator",
                "--kubeconfig",
                str(cluster.cp.kubeconfig_path),
                "--liveness-port",
                str(self.liveness_port),
                "--metrics-port",
                str(self.metrics_port),
                "--drift-interval",
                str(DRIFT_INTERVAL),
                "--retry-max",
                str(RETRY_MAX),
                "--log-level",
                "DEBUG",
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )

    def alive(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"operator exited with {self.process.returncode}:\n{self.tail()}")
        try:
            url = f"http://127.0.0.1:{self.liveness_port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster, nats_server: EmbeddedNats, request: pytest.FixtureRequest
) -> Iterator[OperatorProcess]:
    # Not under pytest's basetemp: concurrent pytest runs rotate those away. Kept on failure.
    log_path = Path(tempfile.mkdtemp(prefix="neurelay-operator-test-")) / "operator.log"
    process = OperatorProcess(cluster, log_path)
    try:
        eventually(process.alive, timeout=60)
        yield process
    finally:
        process.stop()
        if request.session.testsfailed == 0:
            shutil.rmtree(log_path.parent, ignore_errors=True)


_namespaces = itertools.count(1)


@pytest.fixture
def ns(
    cluster: Cluster, operator: OperatorProcess, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh Kubernetes namespace watched by the running operator."""
    name = f"t{next(_namespaces)}-{request.node.name[:40].replace('_', '-').lower().strip('-')}"
    cluster.kubectl("create", "namespace", name)
    yield name
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"--- operator log {operator.log_path} (tail) ---\n{operator.tail(120)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


# -- manifests -----------------------------------------------------------------------------


def secret(name: str, namespace: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": data,
    }


def gateway(name: str, namespace: str, nats_url: str, **spec: Any) -> dict[str, Any]:
    body = {
        "replicas": 2,
        "nats": {"url": nats_url},
        "auth": {"secretRef": {"name": "jwt", "key": "secret"}},
        **spec,
    }
    return {
        "apiVersion": "realtime.neurectomy.io/v1alpha1",
        "kind": "RealtimeGateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def channel(
    name: str, namespace: str, gateway: str, channel_ns: str, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "realtime.neurectomy.io/v1alpha1",
        "kind": "Channel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"gateway": gateway, "namespace": channel_ns, **spec},
    }
