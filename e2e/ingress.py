"""nginx in front of gateway replicas, configured the way ingress-nginx serves a WebSocket service.

The settings mirror what the chart's Ingress annotations ask of
ingress-nginx: HTTP/1.1 with the Upgrade and Connection headers passed on,
hour-long read and send timeouts so idle WebSockets are not cut, no response
buffering, and a failed upstream retried on the next replica, so a client
whose gateway died reconnects through the same address to a live one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from neurelay.embedded import free_port

_TEMPLATE = """\
{user}worker_processes 1;
worker_rlimit_nofile 16384;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {root}/body;
  proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  upstream neurelay {{
{servers}
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://neurelay;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_connect_timeout 2s;
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
      proxy_buffering off;
      proxy_next_upstream error timeout http_502 http_503;
    }}
  }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is None:
        raise RuntimeError("nginx is not installed (scripts/install-e2e installs Debian's nginx)")
    return found


class Ingress:
    def __init__(self, root: Path, upstream_ports: list[int]) -> None:
        self.root = root
        self.port = free_port()
        self.upstream_ports = upstream_ports
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 10.0) -> Ingress:
        self.root.mkdir(parents=True, exist_ok=True)
        # max_fails=0, ingress-nginx's default: a replica that failed once is not shunned for
        # fail_timeout, so clients drained from one replica do not all pile onto another while
        # the restarted one sits marked failed; proxy_next_upstream still retries elsewhere.
        servers = "\n".join(
            f"    server 127.0.0.1:{port} max_fails=0;" for port in self.upstream_ports
        )
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf = self.root / "nginx.conf"
        conf.write_text(
            _TEMPLATE.format(user=user, root=self.root, servers=servers, port=self.port)
        )
        self._process = subprocess.Popen(
            [nginx_binary(), "-p", str(self.root), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not (self.root / "nginx.pid").exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {(self.root / 'error.log').read_text()}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
