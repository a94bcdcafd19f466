"""The aiohttp application: routes, health, readiness and metrics endpoints, lifecycle."""

from __future__ import annotations

from aiohttp import web

from neurelay.gateway import connection, console, http_api, server_api
from neurelay.gateway.runtime import Gateway
from neurelay.gateway.web import GATEWAY_KEY
from neurelay.protocol.codes import CloseCode

_BODY_SLACK = 64 * 1024


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    status = await request.app[GATEWAY_KEY].readiness()
    return web.json_response({"status": status}, status=200 if status == "ready" else 503)


async def metrics(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    return web.Response(
        body=gateway.metrics.exposition(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


def create_app(gateway: Gateway, *, dev_token: str | None = None) -> web.Application:
    app = web.Application(
        client_max_size=gateway.live.config.limits.max_message_bytes + _BODY_SLACK,
        middlewares=[gateway.doorman.middleware],
    )
    app[GATEWAY_KEY] = gateway
    app.on_response_prepare.append(gateway.doorman.response_prepared)
    app.add_routes(
        [
            web.get("/ws", connection.websocket),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics),
            web.post("/api/v1/publish", http_api.publish),
            web.get("/api/v1/channels/{channel}/history", http_api.history),
            *server_api.routes(),
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
    await app[GATEWAY_KEY].close_connections(CloseCode.GOING_AWAY, "server shutting down")


async def _stop(app: web.Application) -> None:
    await app[GATEWAY_KEY].stop()
