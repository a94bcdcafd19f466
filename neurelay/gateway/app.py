"""The aiohttp application: routes, health, readiness and metrics endpoints, lifecycle."""

from __future__ import annotations

import asyncio

from aiohttp import web

from neurelay.errors import BusError
from neurelay.gateway import connection, console, http_api
from neurelay.gateway.connection import GATEWAY_KEY
from neurelay.gateway.runtime import Gateway
from neurelay.protocol.codes import CloseCode

_BODY_SLACK = 64 * 1024


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    if gateway.draining:
        return web.json_response({"status": "draining"}, status=503)
    if not gateway.ready:
        return web.json_response({"status": "nats not connected"}, status=503)
    try:
        await gateway.bus.ping()
    except BusError as e:
        return web.json_response({"status": f"jetstream unreachable: {e}"}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    return web.Response(
        body=gateway.metrics.exposition(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


def create_app(gateway: Gateway, *, dev_token: str | None = None) -> web.Application:
    app = web.Application(
        client_max_size=gateway.live.config.limits.max_message_bytes + _BODY_SLACK
    )
    app[GATEWAY_KEY] = gateway
    app.add_routes(
        [
            web.get("/ws", connection.websocket),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics),
            web.post("/api/v1/publish", http_api.publish),
            web.get("/api/v1/channels/{channel}/history", http_api.history),
        ]
    )
    console.install(app, dev_token=dev_token)
    app.on_startup.append(_start)
    app.on_shutdown.append(_close_connections)
    app.on_cleanup.append(_stop)
    return app


async def _start(app: web.Application) -> None:
    await app[GATEWAY_KEY].start()


async def _close_connections(app: web.Application) -> None:
    connections = list(app[GATEWAY_KEY].connections)
    await asyncio.gather(
        *(c.close(CloseCode.GOING_AWAY, "server shutting down") for c in connections)
    )


async def _stop(app: web.Application) -> None:
    await app[GATEWAY_KEY].stop()
