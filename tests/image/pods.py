"""A kubelet's part, played with buildah: start one container of a pod spec from the image.

`Image` is the built OCI archive pulled into buildah's store; `Pod.start` takes a
pod spec as the API server holds it (a Deployment's template) and runs the named
container with `buildah run --isolation chroot` on the host network, resolving what a
kubelet resolves: command and args against the image's ENTRYPOINT and CMD, the
environment (the image's, the container's, and the service variables), the user and
group from the security contexts (else the image's USER), every volume mount as a host
directory (ConfigMap and Secret items in the kubelet's `..data` layout, emptyDir, the
ServiceAccount token), `readOnlyRootFilesystem` as a read-only bind of every top-level
directory of the image, probes as URLs through the named ports, and termination as the
preStop exec, SIGTERM to the main process, and SIGKILL at the end of the grace period.

What differs from a pod, because no OCI runtime runs here: no PID, network or cgroup
namespace (the main process is not PID 1; container ports are host ports, hence a lock
held by the tests), no capabilities dropped, and no resource limits.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def buildah(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["buildah", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)}: {result.stderr.strip()}")
    return result


@dataclass(frozen=True)
class Image:
    """The image in buildah's store, with its OCI configuration."""

    archive: Path
    image_id: str
    config: Mapping[str, Any]

    @classmethod
    def pull(cls, archive: Path) -> Image:
        image_id = buildah("pull", "--quiet", f"oci-archive:{archive}").stdout.split()[-1]
        inspected = json.loads(buildah("inspect", "--type", "image", image_id).stdout)
        return cls(archive, image_id, inspected["OCIv1"]["config"])

    def container(self) -> WorkingContainer:
        name = buildah("from", "--quiet", "--pull=never", self.image_id).stdout.strip()
        return WorkingContainer(name, Path(buildah("mount", name).stdout.strip()))


@dataclass(frozen=True)
class WorkingContainer:
    """A buildah working container: the image's root filesystem, mounted on the host."""

    name: str
    rootfs: Path

    def run(
        self,
        argv: list[str],
        *,
        user: str,
        env: Mapping[str, str] | None = None,
        volumes: Sequence[str] = (),
        read_only: bool = False,
        workdir: str | None = None,
        **popen: Any,
    ) -> subprocess.Popen[bytes]:
        options = ["--isolation", "chroot", "--network", "host", "--user", user]
        for name, value in (env or {}).items():
            options += ["--env", f"{name}={value}"]
        if workdir:
            options += ["--workingdir", workdir]
        # Mount points as the runtime makes them: in the container's own layer, through the
        # image's symlinks (/var/run -> /run), before a read-only root would refuse them.
        volumes = [self._resolved(volume) for volume in volumes]
        mounted = {volume.split(":")[1] for volume in volumes}
        if "/etc/hosts" in mounted:
            options.append("--no-hosts")  # else buildah mounts its own over it
        if read_only:
            # buildah mounts its own file here before the volumes are in place.
            (self.rootfs / "run/.containerenv").touch()
            for top in sorted(self.rootfs.iterdir()):
                target = f"/{top.name}"
                kernel = top.name in ("dev", "proc", "sys")
                if top.is_dir() and not top.is_symlink() and target not in mounted and not kernel:
                    options += ["--volume", f"{top}:{target}:ro"]
        for volume in volumes:
            options += ["--volume", volume]
        return subprocess.Popen(["buildah", "run", *options, self.name, "--", *argv], **popen)

    def _resolved(self, volume: str) -> str:
        source, target, *mode = volume.split(":")
        parts: list[str] = []
        pending = [p for p in target.split("/") if p]
        for _ in range(256):  # symlink loops end here
            if not pending:
                break
            part = pending.pop(0)
            here = self.rootfs.joinpath(*parts, part)
            if here.is_symlink():
                link = os.readlink(here)
                pending = [p for p in link.split("/") if p] + pending
                if link.startswith("/"):
                    parts = []
            elif part == "..":
                parts = parts[:-1]
            elif part != ".":
                parts.append(part)
        point = self.rootfs.joinpath(*parts)
        if not point.exists():
            point.parent.mkdir(parents=True, exist_ok=True)
            if Path(source).is_dir():
                point.mkdir()
            else:
                point.touch()
        return ":".join([source, "/" + "/".join(parts), *mode])

    def remove(self) -> None:
        buildah("rm", self.name, check=False)


def _ancestry(pid: int) -> list[int]:
    """The descendants of `pid`, breadth first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        for child in sorted(children.get(current, [])):
            found.append(child)
            queue.append(child)
    return found


@dataclass
class Pod:
    """One running container of a pod spec (see the module docstring)."""

    spec: Mapping[str, Any]
    container_spec: Mapping[str, Any]
    working: WorkingContainer
    process: subprocess.Popen[bytes]
    log_path: Path
    workdir: Path
    user: str
    volumes: list[str]
    read_only: bool
    main_pid: int = 0

    @classmethod
    def start(
        cls,
        image: Image,
        spec: Mapping[str, Any],
        container: str,
        *,
        config_maps: Mapping[str, Mapping[str, str]] = {},
        secrets: Mapping[str, Mapping[str, bytes]] = {},
        service_account: ServiceAccount | None = None,
        api_server: tuple[str, int] | None = None,
        cluster_names: Sequence[str] = (),
    ) -> Pod:
        container_spec = next(c for c in spec["containers"] if c["name"] == container)
        workdir = Path(tempfile.mkdtemp(prefix=f"neurelay-pod-{container}-"))
        pod_security = spec.get("securityContext") or {}
        security = {**pod_security, **(container_spec.get("securityContext") or {})}
        image_user = (image.config.get("User") or "0").split(":")
        uid = str(security.get("runAsUser", image_user[0]))
        gid = str(security.get("runAsGroup", image_user[1] if len(image_user) > 1 else "0"))
        fs_group = pod_security.get("fsGroup")
        if security.get("runAsNonRoot") and uid == "0":
            raise AssertionError("runAsNonRoot, but the container would run as root")

        sources = _VolumeSources(workdir / "volumes", fs_group, config_maps, secrets)
        by_name = {v["name"]: sources.materialise(v) for v in spec.get("volumes") or []}
        volumes = []
        for mount in container_spec.get("volumeMounts") or []:
            if mount.get("subPath"):
                raise NotImplementedError("subPath mounts")
            mode = "ro" if mount.get("readOnly") else "rw"
            volumes.append(f"{by_name[mount['name']]}:{mount['mountPath']}:{mode}")
        if cluster_names:
            # What cluster DNS answers, as the kubelet-managed /etc/hosts of the pod.
            hosts = workdir / "hosts"
            hosts.write_text(f"127.0.0.1\tlocalhost {' '.join(cluster_names)}\n")
            hosts.chmod(0o644)
            volumes.append(f"{hosts}:/etc/hosts:ro")
        env = dict(e.split("=", 1) for e in image.config.get("Env") or [])
        if spec.get("automountServiceAccountToken", True) and service_account is not None:
            token_dir = service_account.materialise(workdir / "sa")
            volumes.append(f"{token_dir}:{SERVICE_ACCOUNT_DIR}:ro")
        if api_server is not None:
            # The kubelet sets these in every container, service links or not.
            env["KUBERNETES_SERVICE_HOST"], port = api_server[0], str(api_server[1])
            env["KUBERNETES_SERVICE_PORT"] = env["KUBERNETES_SERVICE_PORT_HTTPS"] = port
        for variable in container_spec.get("env") or []:
            if "value" not in variable:
                raise NotImplementedError(f"env {variable['name']} from a source")
            env[variable["name"]] = variable["value"]

        command = container_spec.get("command")
        args = container_spec.get("args")
        if command is None:
            command = list(image.config.get("Entrypoint") or [])
            if args is None:
                args = list(image.config.get("Cmd") or [])
        argv = [*command, *(args or [])]

        for port in container_spec.get("ports") or []:
            if not port_is_free(port["containerPort"]):
                raise AssertionError(
                    f"port {port['containerPort']} is taken: containers here share the host's"
                    " network, so their ports must be free"
                )
        working = image.container()
        log_path = workdir / "container.log"
        read_only = bool(security.get("readOnlyRootFilesystem"))
        with log_path.open("wb") as log:
            process = working.run(
                argv,
                user=f"{uid}:{gid}",
                env=env,
                volumes=volumes,
                read_only=read_only,
                workdir=container_spec.get("workingDir") or image.config.get("WorkingDir"),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        pod = cls(
            spec,
            container_spec,
            working,
            process,
            log_path,
            workdir,
            f"{uid}:{gid}",
            volumes,
            read_only,
        )
        pod.main_pid = pod._find_main_pid()
        return pod

    def _find_main_pid(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid in _ancestry(self.process.pid):
                try:
                    executable = os.readlink(f"/proc/{pid}/exe")
                except OSError:
                    continue
                # buildah's helpers are buildah itself re-executed, or a memfd copy of it.
                if not Path(executable).name.startswith(("buildah", "memfd:buildah")):
                    return pid
            if self.process.poll() is not None:
                raise AssertionError(f"container exited at once:\n{self.tail()}")
            time.sleep(0.05)
        raise AssertionError(f"no container process after {timeout}s:\n{self.tail()}")

    # -- what the kubelet does with a running container --------------------------------------

    def probe_url(self, probe: str) -> str:
        """URL of an httpGet probe (`readinessProbe`, `livenessProbe`), named ports resolved."""
        get = self.container_spec[probe]["httpGet"]
        port = get["port"]
        if isinstance(port, str):
            ports = {p["name"]: p["containerPort"] for p in self.container_spec["ports"]}
            port = ports[port]
        scheme = get.get("scheme", "HTTP").lower()
        return f"{scheme}://127.0.0.1:{port}{get.get('path', '/')}"

    def probe(self, probe: str) -> int:
        """HTTP status of one probe (0 when nothing answers); 200-399 means success."""
        timeout = float(self.container_spec[probe].get("timeoutSeconds", 1))
        try:
            with urllib.request.urlopen(self.probe_url(probe), timeout=timeout) as response:
                return int(response.status)
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0

    def exec(self, argv: list[str], timeout: float) -> int:
        """Run a command in the container (a preStop exec hook), as its user, with its mounts."""
        process = self.working.run(
            argv, user=self.user, volumes=self.volumes, read_only=self.read_only
        )
        return process.wait(timeout)

    def terminate(self) -> float:
        """A pod deletion: preStop, SIGTERM, SIGKILL after the grace period; seconds it took.

        Raises when the container has to be killed or exits non-zero.
        """
        grace = float(self.spec.get("terminationGracePeriodSeconds", 30))
        started = time.monotonic()
        pre_stop = (self.container_spec.get("lifecycle") or {}).get("preStop") or {}
        if "exec" in pre_stop:
            code = self.exec(pre_stop["exec"]["command"], timeout=grace)
            assert code == 0, f"preStop exited with {code}"
        os.kill(self.main_pid, signal.SIGTERM)
        try:
            code = self.process.wait(max(0.0, grace - (time.monotonic() - started)))
        except subprocess.TimeoutExpired as e:
            os.kill(self.main_pid, signal.SIGKILL)
            self.process.wait()
            raise AssertionError(f"running after the {grace}s grace period:\n{self.tail()}") from e
        assert code == 0, f"exited with {code}:\n{self.tail()}"
        return time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            for pid in [self.main_pid, self.process.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.wait()

    def remove(self) -> None:
        self.kill()
        self.working.remove()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class ServiceAccount:
    """What the kubelet projects at /var/run/secrets/kubernetes.io/serviceaccount."""

    token: str
    ca_cert: bytes
    namespace: str

    def materialise(self, directory: Path) -> Path:
        directory.mkdir(parents=True)
        for name, data in (
            ("token", self.token.encode()),
            ("ca.crt", self.ca_cert),
            ("namespace", self.namespace.encode()),
        ):
            (directory / name).write_bytes(data)
            (directory / name).chmod(0o644)
        return directory


@dataclass(frozen=True)
class _VolumeSources:
    root: Path
    fs_group: int | None
    config_maps: Mapping[str, Mapping[str, str]]
    secrets: Mapping[str, Mapping[str, bytes]]

    def materialise(self, volume: Mapping[str, Any]) -> Path:
        directory = self.root / volume["name"]
        directory.mkdir(parents=True)
        if "emptyDir" in volume:
            directory.chmod(0o777)
            return directory
        if "configMap" in volume:
            source = volume["configMap"]
            data = {k: v.encode() for k, v in self.config_maps[source["name"]].items()}
            mode = source.get("defaultMode", 0o644)
        elif "secret" in volume:
            source = volume["secret"]
            data = dict(self.secrets[source["secretName"]])
            mode = source.get("defaultMode", 0o644)
        else:
            raise NotImplementedError(f"volume {volume['name']}: {sorted(volume)}")
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        # The kubelet's atomic writer: files in a timestamped directory, `..data` pointing
        # at it, and one symlink per item through `..data`.
        stamped = directory / time.strftime("..%Y_%m_%d_%H_%M_%S.0000")
        for item in items:
            target = stamped / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data[item["key"]])
            target.chmod(item.get("mode", mode))
            if self.fs_group is not None:
                os.chown(target, 0, self.fs_group)
            top = item["path"].split("/")[0]
            if not (directory / top).is_symlink():
                (directory / top).symlink_to(f"..data/{top}")
        stamped.chmod(0o755)
        (directory / "..data").symlink_to(stamped.name)
        return directory


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def secret_data(secret: Mapping[str, Any]) -> dict[str, bytes]:
    """A Secret object's data as bytes (as the kubelet writes it into the volume)."""
    return {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}


class Forward:
    """A Service's port, as kube-proxy provides it: connections to 127.0.0.1:`port` go to
    `target` (e.g. 443 to the API server, for pods that dial kubernetes.default.svc)."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.target = target
        self._server = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self._server.settimeout(0.2)
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        self._stopped.set()
        self._server.close()
        self._thread.join()
        for connection in self._sockets:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
