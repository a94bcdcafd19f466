"""Running a gateway process: listener, signals, hot reload, drain, event loop.

SIGTERM drains (readiness turns 503, clients get 1012 spread over the drain
period) and then stops; SIGINT stops at once, closing clients with 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from neurelay.config import GatewayConfig
from neurelay.gateway import reloading
from neurelay.gateway.app import create_app
from neurelay.gateway.draining import drain
from neurelay.gateway.listening import GuardedSite, raise_open_file_limit
from neurelay.gateway.runtime import Gateway

LISTEN_BACKLOG = 4096  # the kernel caps it at net.core.somaxconn


async def serve(
    config: GatewayConfig,
    config_path: Path | None = None,
    *,
    on_ready: Callable[[int], None] | None = None,
    dev_token: str | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT; `on_ready` receives the bound port."""
    files = raise_open_file_limit()
    gateway = Gateway(config)
    runner = web.AppRunner(
        create_app(gateway, dev_token=dev_token), handle_signals=False, shutdown_timeout=5.0
    )
    await runner.setup()
    # A deep accept queue: thousands of clients reconnect at once after a restart or a drain,
    # and SYNs dropped past the default of 128 cost them seconds of retransmission back-off.
    site = GuardedSite(
        runner, gateway.doorman, config.server.host, config.server.port, LISTEN_BACKLOG
    )
    await site.start()
    port = _bound_port(runner, config.server.port)
    loop = asyncio.get_running_loop()
    gateway.log.info(
        "listening",
        extra={
            "host": config.server.host,
            "port": port,
            "loop": type(loop).__module__,
            "open_files": files,
            "connections": gateway.doorman.capacity,
        },
    )
    received: asyncio.Future[signal.Signals] = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _resolve, received, sig)
    watcher = (
        asyncio.create_task(reloading.watch(gateway, config_path), name="neurelay-reload")
        if config_path is not None
        else None
    )
    announcer = asyncio.create_task(_announce(gateway, port, on_ready), name="neurelay-ready")
    try:
        stop_signal = await received
        if stop_signal is signal.SIGTERM:
            await drain(gateway, gateway.live.config.drain.period_seconds)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        for task in (announcer, watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await runner.cleanup()


async def _announce(gateway: Gateway, port: int, on_ready: Callable[[int], None] | None) -> None:
    """Tell `on_ready` once NATS and the streams are set up, so the first client succeeds."""
    await gateway.wait_until_connected(timeout=None)
    gateway.log.info("ready", extra={"port": port})
    if on_ready is not None:
        on_ready(port)


def _resolve(future: asyncio.Future[signal.Signals], sig: signal.Signals) -> None:
    if not future.done():
        future.set_result(sig)


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return configured


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
