"""A local Kubernetes control plane (etcd + kube-apiserver) for tests.

This mirrors what controller-runtime's ``envtest`` does: no kubelet, no
scheduler -- just an API server backed by etcd, which is enough for CRDs,
custom resources, RBAC, events and operators such as kopf. On top of envtest,
kube-controller-manager runs with *only* the garbage collector, so deleting an
owner really deletes its dependents (owner references); no other controller
runs (no Deployment -> ReplicaSet -> Pod, no ServiceAccount tokens, ...).

The binaries are built from source by ``e2e/control-plane/build.sh`` into a
cache outside the repository; :func:`ensure_built` runs it (a no-op once built).

Typical pytest usage::

    from tests.support.control_plane import ControlPlane, ensure_built

    @pytest.fixture(scope="session")
    def control_plane() -> Iterator[ControlPlane]:
        with ControlPlane(ensure_built()) as cp:
            yield cp

    def test_something(control_plane: ControlPlane) -> None:
        control_plane.kubectl("apply", "-f", "-", input=crd_yaml)
        env = control_plane.env()  # KUBECONFIG + bin dir on PATH for subprocesses

Environment variables:

* ``NEURELAY_CONTROL_PLANE_BIN_DIR``: use these binaries, never build.
* ``NEURELAY_CACHE``: cache root used by build.sh (default ``~/.cache/neurelay``).
"""

from __future__ import annotations

import atexit
import base64
import datetime as _dt
import http.client
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "BUILD_SCRIPT",
    "ControlPlane",
    "ControlPlaneError",
    "ensure_built",
]

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
BUILD_SCRIPT: Final = REPO_ROOT / "e2e" / "control-plane" / "build.sh"
BIN_DIR_ENV: Final = "NEURELAY_CONTROL_PLANE_BIN_DIR"
REQUIRED_BINARIES: Final = ("etcd", "kube-apiserver", "kubectl")
# Optional: without it the control plane runs without garbage collection.
CONTROLLER_MANAGER: Final = "kube-controller-manager"

_LOOPBACK: Final = "127.0.0.1"
_IN_CLUSTER_NAMES: Final = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
_LOG_TAIL_LINES: Final = 40


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or queried."""


# --------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------

_built_bin_dir: Path | None = None


def _check_bin_dir(bin_dir: Path) -> Path:
    missing = [name for name in REQUIRED_BINARIES if not os.access(bin_dir / name, os.X_OK)]
    if missing:
        raise ControlPlaneError(f"{bin_dir}: missing executables {', '.join(missing)}")
    return bin_dir


def ensure_built() -> Path:
    """Build etcd/kube-apiserver/kube-controller-manager/kubectl/helm if needed.

    Returns the directory of the binaries.

    Runs ``e2e/control-plane/build.sh``; its progress is streamed to stderr.
    The first build takes a long time (tens of minutes on 2 cores); later
    calls only check the existing binaries. The result is cached per process.
    """
    global _built_bin_dir
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        return _check_bin_dir(Path(override))
    if _built_bin_dir is not None:
        return _built_bin_dir

    # stderr is inherited (progress lines); stdout carries the bin dir.
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        raise ControlPlaneError(
            f"{BUILD_SCRIPT} failed with exit code {proc.returncode}; see its output on stderr"
        )
    _built_bin_dir = _check_bin_dir(Path(lines[-1]))
    return _built_bin_dir


# --------------------------------------------------------------------------
# PKI
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pki:
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_public_key: Path
    sa_private_key: Path


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _generate_pki(cert_dir: Path) -> _Pki:
    now = _dt.datetime.now(_dt.UTC)
    not_before = now - _dt.timedelta(hours=1)
    not_after = now + _dt.timedelta(days=7)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "neurelay-test-ca")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        sans: Sequence[x509.GeneralName],
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    serving_cert, serving_key = leaf(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.DNSName("localhost"),
            # The in-cluster names, for clients that log in the way pods do (kopf's
            # service-account login dials https://kubernetes.default.svc).
            *(x509.DNSName(name) for name in _IN_CLUSTER_NAMES),
            x509.IPAddress(ipaddress.ip_address(_LOOPBACK)),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ],
    )
    admin_cert, admin_key = leaf(
        x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                x509.NameAttribute(NameOID.COMMON_NAME, "neurelay-admin"),
            ]
        ),
        ExtendedKeyUsageOID.CLIENT_AUTH,
        [],
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    pem = serialization.Encoding.PEM
    return _Pki(
        ca_cert=_write(cert_dir / "ca.crt", ca_cert.public_bytes(pem), 0o644),
        serving_cert=_write(cert_dir / "apiserver.crt", serving_cert.public_bytes(pem), 0o644),
        serving_key=_write(cert_dir / "apiserver.key", _pem_key(serving_key)),
        admin_cert=_write(cert_dir / "admin.crt", admin_cert.public_bytes(pem), 0o644),
        admin_key=_write(cert_dir / "admin.key", _pem_key(admin_key)),
        sa_public_key=_write(
            cert_dir / "sa.pub",
            sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo),
            0o644,
        ),
        sa_private_key=_write(cert_dir / "sa.key", _pem_key(sa_key)),
    )


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    """Ask the kernel for `count` distinct free loopback ports (envtest-style).

    Inherently racy (another process may grab a port before we bind it), so
    callers retry when a process fails with "address already in use".
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((_LOOPBACK, 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


class _Process:
    """A child process whose combined output goes to a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        try:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        except BaseException:
            self._log.close()
            raise

    def exited(self) -> bool:
        return self.proc.poll() is not None

    def stop(self, timeout: float) -> None:
        try:
            _terminate(self.proc, timeout)
        finally:
            self._log.close()

    def failure(self, what: str) -> ControlPlaneError:
        code = self.proc.poll()
        state = f"exited with code {code}" if code is not None else "is still running"
        return ControlPlaneError(
            f"{self.name} {what} ({state}); last lines of {self.log_path}:\n{_tail(self.log_path)}"
        )

    def address_in_use(self) -> bool:
        return self.exited() and "address already in use" in _tail(self.log_path, 200)


# --------------------------------------------------------------------------
# Control plane
# --------------------------------------------------------------------------


class ControlPlane:
    """etcd + kube-apiserver on free loopback ports, in a temporary directory.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. After
    ``start()``, :attr:`kubeconfig_path` points to an admin (system:masters)
    kubeconfig and :attr:`server_url` is the API server's https URL.

    With ``garbage_collector=True`` (the default) kube-controller-manager also
    runs, limited to the garbage collector; :attr:`garbage_collecting` tells
    whether it actually runs (it is skipped, with a log line on stderr, when
    the bin dir has no kube-controller-manager, e.g. an old build cache).
    """

    def __init__(
        self,
        bin_dir: Path | str,
        *,
        start_timeout: float = 120.0,
        stop_timeout: float = 20.0,
        extra_apiserver_args: Sequence[str] = (),
        keep_workdir: bool = False,
        garbage_collector: bool = True,
    ) -> None:
        self.bin_dir = Path(bin_dir)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.extra_apiserver_args = tuple(extra_apiserver_args)
        self.keep_workdir = keep_workdir
        self.garbage_collector = garbage_collector
        self._workdir: Path | None = None
        self._kubeconfig: Path | None = None
        self._server_url: str | None = None
        self._etcd: _Process | None = None
        self._apiserver: _Process | None = None
        self._controller_manager: _Process | None = None
        self._ssl: ssl.SSLContext | None = None

    # -- public attributes -------------------------------------------------

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise ControlPlaneError("control plane is not started")
        return self._workdir

    @property
    def kubeconfig_path(self) -> Path:
        if self._kubeconfig is None:
            raise ControlPlaneError("control plane is not started")
        return self._kubeconfig

    @property
    def server_url(self) -> str:
        if self._server_url is None:
            raise ControlPlaneError("control plane is not started")
        return self._server_url

    @property
    def running(self) -> bool:
        return self._apiserver is not None and not self._apiserver.exited()

    @property
    def garbage_collecting(self) -> bool:
        """True while kube-controller-manager (garbage collector only) runs."""
        cm = self._controller_manager
        return cm is not None and not cm.exited()

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._workdir is not None:
            raise ControlPlaneError("control plane is already started")
        _check_bin_dir(self.bin_dir)
        self._workdir = Path(tempfile.mkdtemp(prefix="neurelay-control-plane-"))
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        workdir = self.workdir
        cert_dir = workdir / "pki"
        cert_dir.mkdir(mode=0o700)
        pki = _generate_pki(cert_dir)
        self._ssl = ssl.create_default_context(cafile=str(pki.ca_cert))
        self._ssl.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        deadline = time.monotonic() + self.start_timeout

        etcd_url = self._start_etcd(workdir, deadline)
        self._start_apiserver(workdir, pki, etcd_url, deadline)
        self._kubeconfig = self._write_kubeconfig(workdir / "kubeconfig", pki)
        self._wait_ready(deadline)
        if self.garbage_collector:
            self._start_controller_manager(workdir, pki, deadline)

    def stop(self) -> None:
        """Stop kube-controller-manager, kube-apiserver, etcd; remove the temporary directory."""
        atexit.unregister(self.stop)
        errors: list[BaseException] = []
        for attr in ("_controller_manager", "_apiserver", "_etcd"):
            process: _Process | None = getattr(self, attr)
            setattr(self, attr, None)
            if process is not None:
                try:
                    process.stop(self.stop_timeout)
                except (
                    OSError,
                    subprocess.SubprocessError,
                ) as exc:  # stop the others too
                    errors.append(exc)
        if self._workdir is not None:
            if self.keep_workdir:
                print(f"[control-plane] kept {self._workdir}", file=sys.stderr)
            else:
                shutil.rmtree(self._workdir, ignore_errors=True)
        self._workdir = self._kubeconfig = self._server_url = None
        self._ssl = None
        if errors:
            raise ControlPlaneError(f"errors while stopping the control plane: {errors!r}")

    # -- etcd --------------------------------------------------------------

    def _etcd_supports(self, flag: str) -> bool:
        out = subprocess.run(
            [str(self.bin_dir / "etcd"), "--help"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        return f"--{flag}" in out.stdout + out.stderr

    def _start_etcd(self, workdir: Path, deadline: float) -> str:
        extra = ["--unsafe-no-fsync=true"] if self._etcd_supports("unsafe-no-fsync") else []
        for attempt in range(3):
            client_port, peer_port = _free_ports(2)
            client_url = f"http://{_LOOPBACK}:{client_port}"
            peer_url = f"http://{_LOOPBACK}:{peer_port}"
            data_dir = workdir / f"etcd-{attempt}"
            argv = [
                str(self.bin_dir / "etcd"),
                "--name=neurelay",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=neurelay={peer_url}",
                "--log-level=warn",
                *extra,
            ]
            self._etcd = _Process("etcd", argv, workdir / "etcd.log")
            while time.monotonic() < deadline:
                if self._etcd.exited():
                    break
                if self._etcd_healthy(client_url):
                    return client_url
                time.sleep(0.1)
            if self._etcd.address_in_use() and attempt < 2:
                self._etcd.stop(self.stop_timeout)
                continue
            raise self._etcd.failure(
                "exited during startup" if self._etcd.exited() else "did not become healthy in time"
            )
        raise AssertionError("unreachable")

    @staticmethod
    def _etcd_healthy(client_url: str) -> bool:
        try:
            with urllib.request.urlopen(f"{client_url}/health", timeout=2) as resp:
                body = json.loads(resp.read())
        except (OSError, ValueError):
            return False
        return isinstance(body, dict) and body.get("health") == "true"

    # -- kube-apiserver ----------------------------------------------------

    def _start_apiserver(self, workdir: Path, pki: _Pki, etcd_url: str, deadline: float) -> None:
        cert_dir = workdir / "pki"
        for attempt in range(3):
            (port,) = _free_ports(1)
            server_url = f"https://{_LOOPBACK}:{port}"
            argv = [
                str(self.bin_dir / "kube-apiserver"),
                # The flags envtest passes (controller-runtime
                # pkg/internal/testing/controlplane/apiserver.go + auth.go).
                f"--etcd-servers={etcd_url}",
                f"--cert-dir={cert_dir}",
                f"--secure-port={port}",
                f"--bind-address={_LOOPBACK}",
                # envtest leaves the advertise address to the host's default
                # route; pin it to loopback so no network is needed. The
                # endpoint reconcilers reject loopback IPs (and with no
                # kubelet nothing needs the "kubernetes" Service endpoints).
                f"--advertise-address={_LOOPBACK}",
                "--endpoint-reconciler-type=none",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-account-issuer={server_url}/",
                f"--service-account-key-file={pki.sa_public_key}",
                f"--service-account-signing-key-file={pki.sa_private_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--authorization-mode=RBAC",
                # No controller-manager runs, so nothing would create the
                # "default" ServiceAccount the admission plugin insists on.
                "--disable-admission-plugins=ServiceAccount",
                *self.extra_apiserver_args,
            ]
            self._apiserver = _Process("kube-apiserver", argv, workdir / "kube-apiserver.log")
            self._server_url = server_url
            # Wait until it listens (or dies) before deciding on a retry.
            while time.monotonic() < deadline and not self._apiserver.exited():
                if self._get(server_url, "/livez", timeout=2) is not None:
                    return
                time.sleep(0.2)
            if self._apiserver.address_in_use() and attempt < 2:
                self._apiserver.stop(self.stop_timeout)
                continue
            raise self._apiserver.failure(
                "exited during startup" if self._apiserver.exited() else "did not start in time"
            )

    def _get(self, server_url: str, path: str, timeout: float) -> tuple[int, str] | None:
        """GET as admin; (status, body), or None if the server is unreachable."""
        request = urllib.request.Request(server_url + path)
        try:
            with urllib.request.urlopen(request, context=self._ssl, timeout=timeout) as resp:
                return int(resp.status), resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode(errors="replace")
        except (OSError, http.client.HTTPException):
            return None

    def _wait_ready(self, deadline: float) -> None:
        """Wait for /readyz and for the "default" namespace to exist."""
        assert self._apiserver is not None
        last = "no response"
        checks = ("/readyz", "/api/v1/namespaces/default")
        pending = list(checks)
        while pending:
            if self._apiserver.exited():
                raise self._apiserver.failure("exited during startup")
            if time.monotonic() > deadline:
                raise self._apiserver.failure(
                    f"not ready after {self.start_timeout:.0f}s "
                    f"({pending[0]}: {last.strip()[-500:]})"
                )
            result = self._get(self.server_url, pending[0], timeout=5)
            if result is not None and result[0] == 200:
                pending.pop(0)
                continue
            if result is not None:
                last = f"HTTP {result[0]}: {result[1]}"
            time.sleep(0.2)

    def _write_kubeconfig(self, path: Path, pki: _Pki) -> Path:
        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode("ascii")

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "neurelay-test",
                    "cluster": {
                        "server": self.server_url,
                        "certificate-authority-data": b64(pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": "neurelay-admin",
                    "user": {
                        "client-certificate-data": b64(pki.admin_cert),
                        "client-key-data": b64(pki.admin_key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "neurelay-test",
                    "context": {
                        "cluster": "neurelay-test",
                        "user": "neurelay-admin",
                        "namespace": "default",
                    },
                }
            ],
            "current-context": "neurelay-test",
            "preferences": {},
        }
        # JSON is valid YAML, so every kubeconfig reader accepts it.
        return _write(path, json.dumps(config, indent=2).encode())

    # -- kube-controller-manager (garbage collector only) -------------------

    def _start_controller_manager(self, workdir: Path, pki: _Pki, deadline: float) -> None:
        binary = self.bin_dir / CONTROLLER_MANAGER
        if not os.access(binary, os.X_OK):
            print(
                f"[control-plane] {binary} not found: running WITHOUT garbage collection "
                f"(owner references are not enforced); run {BUILD_SCRIPT} to build it",
                file=sys.stderr,
            )
            return
        for attempt in range(3):
            (port,) = _free_ports(1)
            argv = [
                str(binary),
                f"--kubeconfig={self.kubeconfig_path}",
                # The garbage collector and nothing else: it needs no
                # ServiceAccount tokens, so no service-account key or root CA.
                "--controllers=garbage-collector-controller",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--bind-address={_LOOPBACK}",
                # Its HTTPS endpoint only serves the readiness check: no
                # delegated authn/authz kubeconfigs (with them it would also
                # want a request-header CA), /healthz is always allowed. The
                # apiserver's serving cert is valid for 127.0.0.1 and signed
                # by our CA, so self._ssl verifies it.
                f"--secure-port={port}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
            ]
            self._controller_manager = _Process(
                CONTROLLER_MANAGER, argv, workdir / "kube-controller-manager.log"
            )
            url = f"https://{_LOOPBACK}:{port}"
            while time.monotonic() < deadline and not self._controller_manager.exited():
                result = self._get(url, "/healthz", timeout=2)
                if result is not None and result[0] == 200:
                    return
                time.sleep(0.2)
            if self._controller_manager.address_in_use() and attempt < 2:
                self._controller_manager.stop(self.stop_timeout)
                continue
            raise self._controller_manager.failure(
                "exited during startup"
                if self._controller_manager.exited()
                else "did not become healthy in time"
            )

    # -- helpers for tests -------------------------------------------------

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for subprocesses: KUBECONFIG set, bin dir first on PATH."""
        env = dict(os.environ if base is None else base)
        env["KUBECONFIG"] = str(self.kubeconfig_path)
        env["PATH"] = os.pathsep.join(filter(None, [str(self.bin_dir), env.get("PATH", "")]))
        return env

    def _run(
        self,
        tool: str,
        args: Sequence[str],
        *,
        check: bool,
        input: str | None,
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / tool), f"--kubeconfig={self.kubeconfig_path}", *args]
        proc = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            check=False,
        )
        if check and proc.returncode != 0:
            raise ControlPlaneError(
                f"{tool} {' '.join(args)} failed with exit code {proc.returncode}:\n"
                f"{proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane (output captured as text)."""
        return self._run("kubectl", args, check=check, input=input, timeout=timeout)

    def helm(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run helm against this control plane (output captured as text)."""
        return self._run("helm", args, check=check, input=input, timeout=timeout)

    def logs(self) -> dict[str, str]:
        """Last lines of the etcd, kube-apiserver and kube-controller-manager logs."""
        processes = (self._etcd, self._apiserver, self._controller_manager)
        return {p.name: _tail(p.log_path) for p in processes if p is not None}
