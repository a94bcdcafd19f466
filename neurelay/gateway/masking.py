"""Masking: client frames that are not masked fail the connection (RFC 6455, section 5.1).

A server must close the connection when a client sends an unmasked frame;
aiohttp's frame reader unmasks masked frames but accepts unmasked ones. This
module puts a check in front of it.

`MaskCheck` is plain synchronous code: fed the bytes a client sends, it
walks the frame headers (skipping payloads) and hands back the bytes that
belong to frames whose header is complete and masked; a header still
incomplete is held back until the rest arrives, so what goes on always ends
on a frame boundary or inside a checked frame. At the first unmasked header
it reports the violation and passes nothing more.

`WebSocketResponse` wires it in: when aiohttp installs its frame reader
after the upgrade, the reader is wrapped, and the bytes that arrived with
the upgrade request are checked too. On a violation the wrapper feeds
aiohttp's reader one frame with reserved bits set, which aiohttp itself
refuses the way it refuses any broken frame: the close code 1002 (protocol
error) and the end of the connection. This reaches into aiohttp's request
handler (`_message_tail`, `_payload_parser`) and response (`_post_start`),
which aiohttp has no public hook for; if a release renames them, connections
are still served, unguarded, and a warning is logged once, and the abuse
tests that send unmasked frames fail.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.web_request import BaseRequest

_LOG = logging.getLogger("neurelay.gateway.masking")
# FIN with all three reserved bits, opcode text; masked, empty: aiohttp closes with 1002.
_POISON = b"\xf1\x80\x00\x00\x00\x00"


class MaskCheck:
    """Follows the frame boundaries of a client's byte stream, refusing unmasked frames."""

    __slots__ = ("_header", "_skip", "violated")

    def __init__(self) -> None:
        self._header = bytearray()  # of the frame whose header is not complete yet
        self._skip = 0  # payload bytes of the current frame still to pass
        self.violated = False

    def feed(self, data: bytes) -> bytes:
        """The part of `data` (after any header bytes held back) that may go on."""
        if self.violated:
            return b""
        held = bytes(self._header)  # an incomplete header from before, now to be continued
        header_start = -len(held)  # where in `data` the header being read began
        position, end = 0, len(data)
        while position < end:
            if self._skip:
                step = min(self._skip, end - position)
                self._skip -= step
                position += step
                continue
            if not self._header:
                header_start = position
            take = min(self._header_length() - len(self._header), end - position)
            self._header += data[position : position + take]
            position += take
            if len(self._header) < self._header_length():
                continue  # the length field or the mask key is still to come
            if not self._header[1] & 0x80:
                self.violated = True
                return self._passed(held, data, header_start)
            self._skip = self._payload_length()
            self._header.clear()
        return self._passed(held, data, header_start if self._header else end)

    @staticmethod
    def _passed(held: bytes, data: bytes, stop: int) -> bytes:
        """`held` and `data` up to `stop`; nothing when `stop` lies inside `held`."""
        if stop < 0:
            return b""
        if not held and stop == len(data):
            return data  # the common case: no copy
        return held + data[:stop]

    def _header_length(self) -> int:
        if len(self._header) < 2:
            return 2
        short = self._header[1] & 0x7F
        extended = 2 if short == 126 else 8 if short == 127 else 0
        masked = 4 if self._header[1] & 0x80 else 0
        return 2 + extended + masked

    def _payload_length(self) -> int:
        short = self._header[1] & 0x7F
        if short == 126:
            return int.from_bytes(self._header[2:4], "big")
        if short == 127:
            return int.from_bytes(self._header[2:10], "big")
        return short


class _CheckedReader:
    """aiohttp's frame reader, fed only what `MaskCheck` lets through."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self._check = MaskCheck()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._check.violated:
            return False, b""
        passed = self._check.feed(bytes(data))
        result: tuple[bool, bytes] = (False, b"")
        if passed:
            result = self._reader.feed_data(passed)
        if self._check.violated and not result[0]:
            result = self._reader.feed_data(_POISON)
        return result

    def feed_eof(self) -> None:
        self._reader.feed_eof()


class WebSocketResponse(web.WebSocketResponse):
    """aiohttp's WebSocket response, with unmasked client frames refused (1002)."""

    _warned = False

    def _post_start(self, request: BaseRequest, protocol: Any, writer: Any) -> None:
        handler = request.protocol
        try:
            tail: bytes = handler._message_tail
            handler._message_tail = b""
        except AttributeError:
            self._unguarded()
            super()._post_start(request, protocol, writer)
            return
        super()._post_start(request, protocol, writer)
        reader = getattr(handler, "_payload_parser", None)
        if reader is None:
            self._unguarded()
            return
        checked = _CheckedReader(reader)
        handler._payload_parser = checked
        if tail:
            checked.feed_data(tail)

    @classmethod
    def _unguarded(cls) -> None:
        if not cls._warned:
            cls._warned = True
            _LOG.warning("this aiohttp cannot be guarded: unmasked client frames pass")
