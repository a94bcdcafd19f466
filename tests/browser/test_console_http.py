"""The console's HTTP side, without a browser: the served client, the page, stats, dev token."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request

from neurelay.gateway import console
from tests.browser.conftest import REPOSITORY

DEV_TOKEN = "the-dev-token"
CONSOLE_HEADERS = {console.CONSOLE_HEADER: "1"}


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_client_module_is_served_always_as_javascript_importable_from_any_origin(
    console_gateway, http
):
    running = await console_gateway(console=False)
    async with http.get(running.http_url + "/client/neurelay.js") as response:
        assert response.status == 200
        assert response.content_type == "text/javascript"
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "export class Client" in await response.text()
        etag = response.headers["ETag"]
    headers = {"If-None-Match": etag}
    async with http.get(running.http_url + "/client/neurelay.js", headers=headers) as response:
        assert response.status == 304


def test_served_client_is_the_one_in_clients_js():
    # One file: the package ships it, clients/js links to it for npm and the Node tests.
    served = Path(console.__file__).parent / "static" / "neurelay.js"
    source = REPOSITORY / "clients" / "js" / "neurelay.js"
    assert source.is_symlink()
    assert source.resolve() == served.resolve()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/console"),
        ("GET", "/console/console.js"),
        ("GET", "/console/stats"),
        ("POST", "/console/dev-token"),
    ],
)
async def test_console_is_not_found_when_the_console_is_off(console_gateway, http, method, path):
    running = await console_gateway(dev_token=DEV_TOKEN, console=False)
    async with http.request(method, running.http_url + path, headers=CONSOLE_HEADERS) as response:
        assert response.status == 404


async def test_console_page_and_assets_are_served_with_a_strict_content_security_policy(
    console_gateway, http
):
    running = await console_gateway(console=True)
    for path, kind in [
        ("/console", "text/html"),
        ("/console/console.css", "text/css"),
        ("/console/console.js", "text/javascript"),
    ]:
        async with http.get(running.http_url + path) as response:
            assert response.status == 200, path
            assert response.content_type == kind
            policy = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy
            assert "frame-ancestors 'none'" in policy
    async with http.get(running.http_url + "/console/other.js") as response:
        assert response.status == 404


async def test_console_with_a_trailing_slash_redirects_to_the_page(console_gateway, http):
    running = await console_gateway(console=True)
    async with http.get(running.http_url + "/console/", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "../console"


async def test_stats_count_connections_and_messages_by_namespace(
    console_gateway, http, connect, token
):
    running = await console_gateway(console=True)
    client = await connect(running.ws_url, token())
    await client.request({"type": "subscribe", "channel": "agent:7"})
    for _ in range(3):
        reply = await client.request({"type": "publish", "channel": "agent:7", "payload": 1})
        assert reply["type"] == "published"
    await client.request({"type": "subscribe", "channel": "user:mallory"})  # forbidden
    async with http.get(running.http_url + "/console/stats") as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        stats = await response.json()
    assert stats["connections"] == 1
    assert stats["channels"] == 1
    assert stats["messages_in"]["agent"] == 3
    assert stats["rejections"]["forbidden"] == 1
    assert stats["ready"] is True
    assert stats["time"] > 0


async def test_dev_token_is_given_to_a_same_origin_request_from_this_machine_and_user(
    console_gateway, http
):
    running = await console_gateway(dev_token=DEV_TOKEN, console=True)
    headers = {
        **CONSOLE_HEADERS,
        "Origin": running.http_url,
        "Sec-Fetch-Site": "same-origin",
    }
    async with http.post(running.http_url + "/console/dev-token", headers=headers) as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        assert await response.json() == {"token": DEV_TOKEN}


async def test_dev_token_is_not_found_unless_the_gateway_runs_under_neurelay_dev(
    console_gateway, http
):
    running = await console_gateway(console=True)
    url = running.http_url + "/console/dev-token"
    async with http.post(url, headers=CONSOLE_HEADERS) as response:
        assert response.status == 404


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "header is missing"),
        ({"Origin": "http://evil.example"}, "cross-origin"),
        ({"Origin": "http://127.0.0.1:1"}, "cross-origin"),
        ({"Sec-Fetch-Site": "cross-site"}, "cross-site"),
        ({"Sec-Fetch-Site": "same-site"}, "cross-site"),
        ({"Host": "rebound.evil.example"}, "loopback address"),
    ],
    ids=["no-header", "foreign-origin", "other-port", "cross-site", "same-site", "rebound-host"],
)
async def test_dev_token_is_refused_to_requests_a_foreign_page_could_make(
    console_gateway, http, headers, reason
):
    running = await console_gateway(dev_token=DEV_TOKEN, console=True)
    sent = {**CONSOLE_HEADERS, **headers} if headers else {}
    async with http.post(running.http_url + "/console/dev-token", headers=sent) as response:
        assert response.status == 403
        body = await response.json()
    assert body["code"] == "forbidden"
    assert reason in body["message"]
    assert DEV_TOKEN not in str(body)


async def test_dev_token_is_refused_to_a_browser_of_another_user(
    console_gateway, http, monkeypatch
):
    running = await console_gateway(dev_token=DEV_TOKEN, console=True)
    monkeypatch.setattr(console, "peer_uid", lambda peer, local: os.getuid() + 1)
    url = running.http_url + "/console/dev-token"
    async with http.post(url, headers=CONSOLE_HEADERS) as response:
        assert response.status == 403
        assert "another user" in (await response.json())["message"]


def test_dev_token_is_refused_to_a_peer_on_another_machine():
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: {
        "peername": ("192.0.2.7", 50000),
        "sockname": ("192.0.2.1", 8080),
    }.get(name, default)
    request = make_mocked_request(
        "POST",
        "/console/dev-token",
        headers={"Host": "127.0.0.1:8080", **CONSOLE_HEADERS},
        transport=transport,
    )
    assert "only a browser on this machine" in (console.dev_token_refusal(request) or "")


@pytest.fixture(params=[(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")], ids=["v4", "v6"])
def loopback_pair(request) -> Iterator[tuple[Any, Any]]:
    family, host = request.param
    try:
        listener = socket.socket(family)
        listener.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host} on this machine")
    listener.listen()
    client = socket.socket(family)
    client.connect(listener.getsockname())
    server_side, _ = listener.accept()
    yield server_side.getpeername(), server_side.getsockname()
    for s in (client, server_side, listener):
        s.close()


def test_peer_uid_names_the_user_owning_the_other_end_of_a_loopback_connection(loopback_pair):
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp on this system")
    peer, local = loopback_pair
    assert console.peer_uid(peer, local) == os.getuid()
    assert console.peer_uid(("127.0.0.1", 1), ("127.0.0.1", 2)) is None
