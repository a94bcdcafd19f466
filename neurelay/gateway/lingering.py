"""Lingering: a slow consumer's socket, held until the client has taken it all or is cut.

A client cut off as a slow consumer gets the 4005 close frame right behind
what its socket already holds, and a grace period from the overflow to read
up to it. Closing the transport cannot bound that period: the kernel goes on
delivering a closed socket's send buffer (megabytes) at whatever pace the
client reads, so a trickle reader learned 4005 over a minute later.
`Lingering` holds a duplicate of the socket's descriptor from the overflow
on, so the connection outlives the transport. Every `POLL_SECONDS` it looks
at the bytes the client has not acknowledged yet (Linux `SIOCOUTQ`): once
none are left and the transport is closed, the socket closes normally; at
the deadline it is reset (`SO_LINGER` 0: the kernel drops what is unsent and
answers RST). Where the queue cannot be read, the socket is held to the
deadline and reset then. A held descriptor is one the doorman does not count,
so at most `MAX_HELD` are held (half its reserve); a slow consumer beyond that
is reset at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import struct
import termios

# How often held sockets are looked at: the most a deadline may be overshot.
POLL_SECONDS = 0.25
# Descriptors held at once: half of what the doorman keeps in reserve (listening.FILE_RESERVE).
MAX_HELD = 32
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() answers RST
_OUTQ = getattr(termios, "TIOCOUTQ", None)  # SIOCOUTQ on Linux: unacknowledged bytes


class Lingering:
    """Sockets of closed slow consumers, by the loop time they are reset at."""

    __slots__ = ("_held", "_timer")

    def __init__(self) -> None:
        self._held: dict[socket.socket, tuple[asyncio.Transport, float]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, transport: asyncio.Transport, deadline: float) -> None:
        """Keep `transport`'s connection open until the client has acknowledged everything
        written to it, but no later than `deadline` (loop time)."""
        raw = transport.get_extra_info("socket")
        if len(self._held) >= MAX_HELD:
            with contextlib.suppress(AttributeError, OSError):
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            transport.abort()
            return
        try:
            kept = socket.socket(fileno=os.dup(raw.fileno()))
        except (AttributeError, OSError):
            transport.abort()  # nothing to hold it by: cut now rather than never
            return
        self._held[kept] = (transport, deadline)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(POLL_SECONDS, self._check)

    def close(self) -> None:
        """Reset every held connection (the gateway is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, self._held = self._held, {}
        for kept, (transport, _) in held.items():
            _reset(kept, transport)

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for kept, (transport, deadline) in list(self._held.items()):
            if _taken(kept, transport):
                del self._held[kept]
                _release(kept)
            elif now >= deadline:
                del self._held[kept]
                _reset(kept, transport)
        if self._held:
            due = min(deadline for _, deadline in self._held.values()) - now
            self._timer = loop.call_later(max(0.0, min(POLL_SECONDS, due)), self._check)
        else:
            self._timer = None


def _taken(kept: socket.socket, transport: asyncio.Transport) -> bool:
    """Whether the client has acknowledged all the gateway wrote, the close frame included."""
    if not transport.is_closing():
        return False
    if transport.get_write_buffer_size():
        return False
    if _OUTQ is None:
        return False
    try:
        (unacknowledged,) = struct.unpack("i", fcntl.ioctl(kept.fileno(), _OUTQ, bytes(4)))
    except OSError:
        return False
    return bool(unacknowledged == 0)


def _release(kept: socket.socket) -> None:
    """Close normally: what the client sent unread (its close frame) is read first, since
    closing over unread input would answer RST."""
    kept.setblocking(False)
    with contextlib.suppress(OSError):
        for _ in range(16):
            if not kept.recv(65536):
                break
    kept.close()


def _reset(kept: socket.socket, transport: asyncio.Transport) -> None:
    try:
        with contextlib.suppress(OSError):
            kept.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        if not transport.is_closing() or transport.get_write_buffer_size():
            # The transport still has the socket open: whichever descriptor closes last
            # sends the RST.
            transport.abort()
    finally:
        kept.close()
