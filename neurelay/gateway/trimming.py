"""Trimming: after the upgrade, drop what aiohttp keeps from the HTTP phase.

Most connections sit idle for hours, so what each one holds is what a
gateway's memory grows by. aiohttp keeps its HTTP/1.1 request parser and
its queue of parsed requests for a connection's whole life, though after a
WebSocket upgrade its frame reader gets every byte; the upgrade request
caches what was read of it (the URL, the query with the `?token=` copied
once more, the route match); and the response keeps the upgrade's headers
(close to a kilobyte) though they are sent. `trim` lets them go: the
parser, the cache (aiohttp computes a cached value again if asked) and the
sent headers, and the queue is swapped for one shared queue that holds
nothing. It reaches into aiohttp's request handler (`_parser`,
`_messages`) and request (`_cache`), which aiohttp has no public way to
release; if a release renames them, nothing is trimmed (the connection is
served all the same) and tests/gateway/test_idle_memory.py fails.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from aiohttp import web

# Keeps nothing (maxlen 0), so every upgraded connection can share it.
_NO_MESSAGES: deque[Any] = deque(maxlen=0)


def trim(request: web.Request, response: web.StreamResponse) -> None:
    """Release the HTTP-phase state of `request`'s connection, upgraded by `response`."""
    if response.prepared:
        response.headers.clear()  # already on the wire
    handler = request.protocol
    # aiohttp reads with the HTTP parser only while `_payload_parser` is unset and the
    # connection not upgraded; after the upgrade its frame reader is the payload parser.
    if getattr(handler, "_upgraded", False) and getattr(handler, "_payload_parser", None):
        handler._parser = None
        if isinstance(getattr(handler, "_messages", None), deque) and not handler._messages:
            handler._messages = _NO_MESSAGES
    cache = getattr(request, "_cache", None)
    if isinstance(cache, dict):
        cache.clear()
