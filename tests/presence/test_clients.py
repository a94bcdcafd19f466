"""The Python client and the CLI against a gateway with presence on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt
import pytest

from neurelay.client import Client, ConnectionLost, Join, Leave, Member, ServerError
from neurelay.config import GatewayConfig
from neurelay.protocol.codes import ErrorCode
from tests.test_cli import _neurelay

NAMESPACES = {
    "conversation": {"history_messages": 10, "presence": True, "join_leave": True},
    "agent": {"history_messages": 10},
}


@pytest.fixture
async def running(gateway_factory: Any, make_config: Callable[..., GatewayConfig]) -> Any:
    return await gateway_factory(make_config(namespaces=NAMESPACES))


async def test_python_client_reads_presence_stats_and_join_leave(running, token):
    notices: list[Join | Leave] = []
    async with (
        Client(running.ws_url, token(user="ada"), on_join_leave=notices.append) as ada,
        Client(running.ws_url, token(user="bob", info={"name": "Bob"})) as bob,
    ):
        await ada.subscribe("conversation:c")
        await bob.subscribe("conversation:c")
        presence = await ada.presence("conversation:c")
        stats = await bob.presence_stats("conversation:c")
        await bob.unsubscribe("conversation:c")
        for _ in range(200):
            if len(notices) == 2:
                break
            await asyncio.sleep(0.02)

    assert sorted(m.user for m in presence.clients) == ["ada", "bob"]
    assert Member("bob", presence.clients[1].connection, {"name": "Bob"}) in presence.clients
    assert not presence.truncated
    assert (stats.users, stats.connections) == (2, 2)
    assert [type(n) for n in notices] == [Join, Leave]
    assert notices[0].member.user == "bob"


async def test_python_client_gets_presence_disabled_as_a_server_error(running, token):
    async with Client(running.ws_url, token()) as client:
        with pytest.raises(ServerError) as refused:
            await client.presence("agent:1")

    assert refused.value.code is ErrorCode.PRESENCE_DISABLED


async def test_server_unsubscribe_ends_the_python_subscription(running, token):
    async with Client(running.ws_url, token(user="bob")) as client:
        subscription = await client.subscribe("agent:x")
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                running.http_url + "/api/v1/users/bob/unsubscribe",
                json={"channel": "agent:x"},
                headers={"Authorization": "Bearer " + token(user="ops", admin=True)},
            ) as response,
        ):
            assert (await response.json())["connections"] == 1

        with pytest.raises(ConnectionLost):
            await subscription.get(timeout=10)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"[]", 400),
        (b"not json", 400),
        (b'{"issued_before": "yesterday"}', 400),
        (b'{"issued_before": -1}', 400),
        (b'{"issued_before": 1, "extra": 2}', 400),
        (b'{"issued_before": 1, "pad": "' + b"x" * 5000 + b'"}', 413),
    ],
)
async def test_malformed_revoke_bodies_are_refused(running, token, body, status):
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            running.http_url + "/api/v1/users/bob/revoke",
            data=body,
            headers={"Authorization": "Bearer " + token(user="ops", admin=True)},
        ) as response,
    ):
        assert response.status == status


async def test_channels_listing_refuses_a_malformed_namespace(running, token):
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            running.http_url + "/api/v1/channels?namespace=Not.Valid",
            headers={"Authorization": "Bearer " + token(admin=True)},
        ) as response,
    ):
        assert (response.status, (await response.json())["code"]) == (400, "bad_request")


async def test_presence_command_prints_one_line_per_connection_and_stats(running, token):
    async with Client(running.ws_url, token(user="ada", info={"name": "Ada"})) as ada:
        await ada.subscribe("conversation:cli")
        env = {"NEURELAY_URL": running.ws_url, "NEURELAY_TOKEN": token(user="asker")}
        code, out, _ = await _neurelay("presence", "conversation:cli", env=env)
        stats_code, stats, _ = await _neurelay("presence", "conversation:cli", "--stats", env=env)
    admin_code, minted, _ = await _neurelay(
        "token", "--secret", "s" * 32, "--sub", "ops", "--admin", "--info", '{"name": "Ops"}'
    )

    [line] = [json.loads(line) for line in out.splitlines()]
    assert code == stats_code == admin_code == 0
    assert (line["user"], line["info"]) == ("ada", {"name": "Ada"})
    assert json.loads(stats) == {"channel": "conversation:cli", "users": 1, "connections": 1}
    claims = jwt.decode(minted.strip(), options={"verify_signature": False})
    assert (claims["admin"], claims["info"]) == (True, {"name": "Ops"})
