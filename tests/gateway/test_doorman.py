"""The doorman's deadline covers a request's arrival, not the work its handler does after."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from neurelay.config import ServerSettings
from neurelay.gateway.listening import Doorman
from neurelay.gateway.observability import Metrics


class _Transport:
    def __init__(self) -> None:
        self.aborted = False

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


class _Request:
    def __init__(self, transport: _Transport) -> None:
        self.transport = transport
        self.method = "POST"
        self.headers: CIMultiDict[str] = CIMultiDict()


def _doorman() -> Doorman:
    settings = ServerSettings(handshake_timeout_seconds=0.5)
    return Doorman(settings, 0.1, Metrics(), logging.getLogger("test"))


async def _serve(doorman: Doorman, request: Any, work: Any) -> web.StreamResponse:
    return await doorman.middleware(request, work)


async def test_a_handler_still_working_after_reading_its_body_is_not_cut() -> None:
    doorman = _doorman()
    transport = _Transport()
    doorman.opened(transport)  # type: ignore[arg-type]
    request = _Request(transport)

    async def slow_publish(request: Any) -> web.StreamResponse:
        doorman.request_read(request)
        await asyncio.sleep(1.5)  # waiting for acks, well past the request deadline
        return web.Response(text="published")

    response = await _serve(doorman, request, slow_publish)
    assert response.text == "published"
    assert not transport.aborted


async def test_a_handler_whose_body_never_arrives_is_cut_at_the_request_deadline() -> None:
    doorman = _doorman()
    transport = _Transport()
    doorman.opened(transport)  # type: ignore[arg-type]
    request = _Request(transport)

    async def body_trickling(request: Any) -> web.StreamResponse:
        await asyncio.sleep(1.5)  # still reading a body that does not come
        return web.Response(text="late")

    await _serve(doorman, request, body_trickling)
    assert transport.aborted
