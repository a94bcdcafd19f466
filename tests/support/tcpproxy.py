"""A loopback TCP proxy whose link can be cut and restored, or its replies held, on demand."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self.cut_off = False
        self.bytes_down = 0  # bytes passed from the target back to the clients
        self.links_made = 0  # connections passed through to the target, ever
        self._cut_at: int | None = None
        self._down_open = asyncio.Event()
        self._down_open.set()

    async def start(self) -> None:
        """Listen (again, on the same port after `stop`)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.links_made += 1
        self._links.update((writer, up_writer))
        for source, sink, down in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._pump(source, sink, down))
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, down: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await source.read(65536):
                if down:
                    await self._down_open.wait()
                sink.write(data)
                if down:
                    self.bytes_down += len(data)
                    if self._cut_at is not None and self.bytes_down >= self._cut_at:
                        self._cut_at = None
                        self.cut()
                        self.restore()
                        return
                await sink.drain()
        sink.close()

    def cut_after(self, size: int) -> None:
        """Drop every link once `size` more bytes have come back from the target."""
        self._cut_at = self.bytes_down + size

    def hold_down(self) -> None:
        """Keep what the target sends back in the proxy (the links stay up) until released."""
        self._down_open.clear()

    def release_down(self) -> None:
        self._down_open.set()

    def cut(self) -> None:
        """Drop every link and refuse new ones until `restore`."""
        self.cut_off = True
        for writer in self._links:
            writer.transport.abort()
        self._links.clear()

    def restore(self) -> None:
        self.cut_off = False

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
