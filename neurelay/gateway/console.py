"""The browser side of a gateway: the JavaScript client, and the live console page.

`install(app)` adds these routes to the gateway's application:

- `GET /client/neurelay.js`, always: the dependency-free ES module client
  (`clients/js/neurelay.js`, shipped in `static/`), importable from any origin.
- `GET /console` with its `console.css` and `console.js`, when `console` is on
  in the configuration (checked per request, so a reload turns it on or off):
  a page that authenticates with a pasted token, subscribes, publishes and
  shows messages, their `seq`, reconnects and the gateway's counters.
- `GET /console/stats`, when the console is on: the counters of `/metrics` as
  JSON (connections, channels, messages in and out by namespace, rejections),
  which the page turns into rates.
- `POST /console/dev-token`, only when the console is on *and* `create_app`
  was given the development token, which only `neurelay dev` does: hands that
  token to the console page so it can connect without pasting. It answers
  only a request that is from a loopback address and addressed to a loopback
  host name (so a DNS-rebound public name cannot reach it), that carries the
  header `X-Neurelay-Console: 1` (which a cross-origin page cannot send
  without a CORS preflight that is never granted), whose `Origin` and
  `Sec-Fetch-Site`, when present, say same-origin, and whose peer socket
  belongs to the operating-system user running the gateway (read from
  /proc/net/tcp; where that cannot be verified the token is refused and must
  be pasted). The token never appears in a URL, a log or a cache.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import struct
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from yarl import URL

from neurelay.gateway.observability import Metrics
from neurelay.gateway.web import GATEWAY_KEY, error_response
from neurelay.protocol.codes import ErrorCode

DEV_TOKEN_KEY = web.AppKey("neurelay_console_dev_token", str)
CONSOLE_HEADER = "X-Neurelay-Console"

_PAGE_SECURITY = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_NO_STORE = {"Cache-Control": "no-store"}
_PROC_NET_TCP = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str

    @classmethod
    def load(cls, name: str, content_type: str) -> _Asset:
        body = resources.files("neurelay.gateway").joinpath("static", name).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return cls(body, content_type, etag)

    def response(self, request: web.Request, headers: dict[str, str]) -> web.Response:
        common = {"ETag": self.etag, "Cache-Control": "no-cache", **headers}
        if request.headers.get("If-None-Match") == self.etag:
            return web.Response(status=304, headers=common)
        return web.Response(body=self.body, headers={"Content-Type": self.content_type, **common})


class _Console:
    """The route handlers, holding the static files read once at start-up."""

    def __init__(self) -> None:
        self.client = _Asset.load("neurelay.js", "text/javascript; charset=utf-8")
        self.files = {
            "": _Asset.load("console.html", "text/html; charset=utf-8"),
            "console.css": _Asset.load("console.css", "text/css; charset=utf-8"),
            "console.js": _Asset.load("console.js", "text/javascript; charset=utf-8"),
        }

    async def client_module(self, request: web.Request) -> web.Response:
        # A public, static file: other origins may import it (module scripts need CORS).
        return self.client.response(
            request, {"Access-Control-Allow-Origin": "*", "X-Content-Type-Options": "nosniff"}
        )

    async def page(self, request: web.Request) -> web.StreamResponse:
        _require_console(request)
        asset = self.files.get(request.match_info.get("name", ""))
        if asset is None:
            raise web.HTTPNotFound()
        return asset.response(request, _PAGE_SECURITY)

    async def trailing_slash(self, request: web.Request) -> web.StreamResponse:
        _require_console(request)
        # Relative, so it also works behind a proxy that mounts the gateway under a path.
        raise web.HTTPFound("../console")

    async def stats(self, request: web.Request) -> web.Response:
        _require_console(request)
        gateway = request.app[GATEWAY_KEY]
        body = {
            **snapshot(gateway.metrics),
            "ready": gateway.ready,
            "draining": gateway.draining,
        }
        return web.json_response(body, headers=_NO_STORE)

    async def dev_token(self, request: web.Request) -> web.Response:
        _require_console(request)
        token = request.app.get(DEV_TOKEN_KEY)
        if token is None:
            raise web.HTTPNotFound(text="no development token: paste a token")
        refusal = dev_token_refusal(request)
        if refusal is not None:
            gateway = request.app[GATEWAY_KEY]
            gateway.log.warning("console dev token refused: %s", refusal)
            return error_response(ErrorCode.FORBIDDEN, refusal)
        return web.json_response({"token": token}, headers=_NO_STORE)


def install(app: web.Application, *, dev_token: str | None = None) -> None:
    """Add the client and console routes to `app`; `dev_token` only from `neurelay dev`."""
    handlers = _Console()
    if dev_token is not None:
        app[DEV_TOKEN_KEY] = dev_token
    app.add_routes(
        [
            web.get("/client/neurelay.js", handlers.client_module),
            web.get("/console", handlers.page),
            web.get("/console/", handlers.trailing_slash),
            web.get("/console/stats", handlers.stats),
            web.post("/console/dev-token", handlers.dev_token),
            web.get("/console/{name:console\\.(?:css|js)}", handlers.page),
        ]
    )


def _require_console(request: web.Request) -> None:
    if not request.app[GATEWAY_KEY].live.config.console:
        raise web.HTTPNotFound(text="the console is off (configuration field `console`)")


def snapshot(metrics: Metrics) -> dict[str, Any]:
    """The gateway's counters now, for the console; rates come from two snapshots."""
    values: dict[str, Any] = {
        "time": int(time.time() * 1000),
        "connections": 0,
        "channels": 0,
        "messages_in": {},
        "messages_out": {},
        "rejections": {},
        "nats_reconnects": 0,
    }
    by_label = {
        "neurelay_messages_in_total": ("messages_in", "namespace"),
        "neurelay_messages_out_total": ("messages_out", "namespace"),
        "neurelay_rejections_total": ("rejections", "code"),
    }
    single = {
        "neurelay_connections": "connections",
        "neurelay_channels": "channels",
        "neurelay_nats_reconnects_total": "nats_reconnects",
    }
    for family in metrics.registry.collect():
        for sample in family.samples:
            name: str = sample.name
            if name in single:
                values[single[name]] = int(sample.value)
            elif name in by_label:
                key, label = by_label[name]
                values[key][sample.labels.get(label, "")] = int(sample.value)
    return values


# -- the development token's guard ---------------------------------------------------------


def dev_token_refusal(request: web.Request) -> str | None:
    """Why `request` may not have the development token, or None when it may."""
    if request.headers.get(CONSOLE_HEADER) != "1":
        return f"the {CONSOLE_HEADER} header is missing"
    if not _is_loopback_address(request.remote):
        return "only a browser on this machine may have the development token"
    if not _is_loopback_host(request.url.host):
        return "the console must be opened at a loopback address (127.0.0.1 or localhost)"
    origin = request.headers.get("Origin")
    if origin is not None and URL(origin).origin() != request.url.origin():
        return "cross-origin requests may not have the development token"
    if request.headers.get("Sec-Fetch-Site", "same-origin") != "same-origin":
        return "cross-site requests may not have the development token"
    transport = request.transport
    if transport is None:
        return "the connection is gone"
    uid = peer_uid(transport.get_extra_info("peername"), transport.get_extra_info("sockname"))
    if uid is None:
        return "cannot tell which user's browser asks on this system; paste the token"
    if uid != os.getuid():
        return "the browser belongs to another user of this machine"
    return None


def _is_loopback_address(address: str | None) -> bool:
    if address is None:
        return False
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _is_loopback_host(host: str | None) -> bool:
    if host is None:
        return False
    host = host.strip("[]").rstrip(".").lower()
    return host == "localhost" or _is_loopback_address(host)


def peer_uid(peer: Any, local: Any) -> int | None:
    """The uid owning the other end of a loopback TCP connection, from /proc/net/tcp(6).

    `peer` and `local` are the connection's peername and sockname; the peer's socket
    is the entry whose local address is `peer` and remote address is `local`.
    None when the system does not say (no /proc, or the socket is gone).
    """
    try:
        wanted = {(p, q) for p in _proc_forms(peer) for q in _proc_forms(local)}
    except (ValueError, TypeError, IndexError):
        return None
    for table in _PROC_NET_TCP:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 7 and (fields[1], fields[2]) in wanted:
                return int(fields[7])
    return None


def _proc_forms(address: Any) -> list[str]:
    """An (ip, port, ...) socket address as /proc/net/tcp(6) may write it: hex words in
    host byte order; an IPv4 address also as the IPv4-mapped IPv6 one, and back."""
    host, port = str(address[0]), int(address[1])
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    ipv4 = ip if isinstance(ip, ipaddress.IPv4Address) else ip.ipv4_mapped
    if ipv4 is None:
        return [_hex_words(ip.packed, port)]
    mapped = ipaddress.IPv6Address(f"::ffff:{ipv4}")
    return [_hex_words(ipv4.packed, port), _hex_words(mapped.packed, port)]


def _hex_words(packed: bytes, port: int) -> str:
    words = struct.unpack(f"={len(packed) // 4}I", packed)
    return "".join(f"{word:08X}" for word in words) + f":{port:04X}"
