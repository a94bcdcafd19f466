"""The `neurelay` command as people and scripts use it."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import re
import signal
import sys

import jwt
import pytest

from neurelay.client import Client
from neurelay.embedded import free_port
from tests.conftest import SECRET

pytestmark = pytest.mark.timeout(90)


async def _neurelay(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "neurelay.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_version_option_prints_the_package_version():
    code, out, _ = await _neurelay("--version")
    assert code == 0
    assert out.strip() == f"neurelay {importlib.metadata.version('neurelay')}"


async def test_token_command_signs_the_requested_claims():
    code, out, _ = await _neurelay(
        "token",
        "--secret",
        SECRET,
        "--sub",
        "ops",
        "--channels",
        "agent:*",
        "system",
        "--publish",
        "agent:7",
        "--ttl",
        "120",
    )
    assert code == 0
    claims = jwt.decode(out.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "ops"
    assert claims["channels"] == ["agent:*", "system"]
    assert claims["publish"] == ["agent:7"]
    assert claims["exp"] - claims["iat"] == 120


async def test_pub_and_sub_commands_use_url_and_token_from_the_environment(gateway, token):
    env = {"NEURELAY_URL": gateway.ws_url, "NEURELAY_TOKEN": token()}
    code, out, err = await _neurelay("pub", "agent:cli", '{"n": 1}', "--id", "cli-1", env=env)
    assert code == 0, err
    published = json.loads(out)
    assert published["channel"] == "agent:cli"
    code, out, err = await _neurelay("pub", "agent:cli", "plain words", env=env)
    assert code == 0, err
    code, out, err = await _neurelay("sub", "agent:cli", "--since", "0", "--count", "2", env=env)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["payload"] for line in lines] == [{"n": 1}, "plain words"]
    assert lines[0]["seq"] == published["seq"]
    assert lines[0]["id"] == "cli-1"


async def test_client_commands_without_a_token_explain_what_is_missing(gateway):
    env = {"NEURELAY_URL": gateway.ws_url, "NEURELAY_TOKEN": ""}
    code, _, err = await _neurelay("pub", "agent:x", "1", env=env)
    assert code == 2
    assert "token is required" in err


async def test_gateway_command_reports_an_invalid_configuration(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("limits:\n  messages_per_second: -3\n")
    code, _, err = await _neurelay("gateway", "--config", str(path))
    assert code == 2
    assert "messages_per_second" in err


async def test_dev_command_serves_with_its_own_nats_and_stops_cleanly_on_ctrl_c():
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "neurelay.cli",
        "dev",
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    output = ""
    while "Press Ctrl-C" not in output:
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line, output
        output += line.decode()
    url = re.search(r"gateway ready at (\S+)", output).group(1)
    secret = re.search(r"JWT secret: (\S+)", output).group(1)
    token = re.search(r"token \(.*\):\n\s+(\S+)", output).group(1)
    nats_store = re.search(r"\(store (\S+)\)", output).group(1)
    assert url == f"ws://127.0.0.1:{port}/ws"
    assert jwt.decode(token, secret, algorithms=["HS256"])["sub"] == "dev"
    async with Client(url, token) as client:
        subscription = await client.subscribe("conversation:demo")
        published = await client.publish("conversation:demo", "hello")
        assert (await subscription.get(timeout=10)).seq == published.seq
    process.send_signal(signal.SIGINT)
    rest = await asyncio.wait_for(process.stdout.read(), 30)
    assert await process.wait() == 0
    assert "stopped" in rest.decode()
    assert not await asyncio.to_thread(os.path.exists, nats_store)
