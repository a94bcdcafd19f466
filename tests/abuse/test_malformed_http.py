"""Oversized request lines and headers: refused, logged as one JSON line, no token in the log.

aiohttp reports such requests with a traceback and the offending bytes; the
gateway's log keeps one JSON line per refused request and never the request
itself, which may carry a token in `?token=` or `Authorization`. A bystander
on the same gateway loses nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from tests.abuse.bystander import Bystander


async def _send_raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(), 30.0)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_oversized_request_lines_and_headers_log_one_json_line_without_the_token(
    gateway_process: Any, connect: Any, token: Any
) -> None:
    gateway = await gateway_process("malformed").start()
    bystander = await Bystander(connect, gateway.ws_url, token(user="bystander")).start()
    secret = token(user="victim")
    pad = "A" * 10_000
    attacks = [
        f"GET /ws?token={secret}{pad} HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}{pad}\r\n\r\n",
        f"GET /ws HTTP/1.1\r\nHost: x\r\nX-{pad}: {secret}\r\n\r\n",
        f"G\x00T /ws?token={secret} HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    for attack in attacks:
        answer = await _send_raw(gateway.port, attack.encode())
        assert answer.split(b" ", 2)[1] == b"400", answer[:100]

    await bystander.finish()
    gateway.stop()
    lines = gateway.log_path.read_text().splitlines()
    entries = [orjson.loads(line) for line in lines]  # every line is one JSON object
    refused = [e for e in entries if e["message"] == "refused a malformed HTTP request"]
    assert len(refused) == len(attacks) - 1  # aiohttp keeps a bad method at debug level
    body, signature = secret.split(".")[1:]
    for line in lines:
        assert body[:16] not in line
        assert signature[:16] not in line
