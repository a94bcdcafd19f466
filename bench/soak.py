"""python -m bench.soak (scripts/soak): one gateway under mixed traffic, churn and attacks for long.

A gateway process on its own NATS takes, for `--minutes`: subscribers that
resume with `since` after being dropped (churn), publishers, and every
`--attack-every` seconds one of the attacks of tests/abuse (idle raw
sockets, half-sent upgrades, a non-reading consumer, `last`/`since` on a long
channel, oversized headers, far-future tokens). Every `--interval` seconds it
prints the gateway's RSS, open file descriptors, asyncio tasks and NATS
reconnects. After `--warmup` minutes, a sample set whose later half is
clearly above its earlier half (beyond a small tolerance) is a failure: the
exit status is 1 and the offending series is named. Not part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import yaml

from neurelay.auth import mint_token
from neurelay.embedded import EmbeddedNats, free_port

SECRET = "soak-secret-" + "s" * 32
# Allowed growth of a series' later half over its earlier half after warm-up.
TOLERANCE = {"rss_mb": 0.10, "fds": 20, "tasks": 20, "nats_reconnects": 0}


def _token(user: str) -> str:
    return mint_token(SECRET, user, channels=("agent:*", "conversation:*"), publish=("agent:*",))


class Gateway:
    """The gateway process under test and what /proc and /metrics say about it."""

    def __init__(self, workdir: Path, nats_url: str) -> None:
        self.port = free_port()
        config = {
            "server": {"host": "127.0.0.1", "port": self.port},
            "nats": {"servers": [nats_url], "subject_prefix": "soak"},
            "auth": {"secret": SECRET},
            "limits": {"messages_per_second": 1000, "connections_per_user": 50},
            "log_level": "WARNING",
        }
        path = workdir / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        self.log = workdir / "gateway.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                ["nice", sys.executable, "-m", "neurelay.cli", "gateway", "--config", str(path)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"

    async def ready(self, http: aiohttp.ClientSession) -> None:
        for _ in range(300):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(self.url + "/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise SystemExit(f"gateway not ready: {self.log.read_text()[-2000:]}")

    async def sample(self, http: aiohttp.ClientSession) -> dict[str, float]:
        rss_mb, fds = _usage(self.process.pid)
        metrics: dict[str, float] = {}
        async with http.get(self.url + "/metrics") as response:
            for line in (await response.text()).splitlines():
                if line and not line.startswith("#"):
                    name, _, value = line.rpartition(" ")
                    metrics[name] = float(value)
        return {
            "rss_mb": rss_mb,
            "fds": fds,
            "tasks": metrics.get("neurelay_tasks", -1),
            "nats_reconnects": metrics.get("neurelay_nats_reconnects_total", 0),
            "connections": metrics.get("neurelay_connections", 0),
        }

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _usage(pid: int) -> tuple[float, int]:
    """Resident memory in MiB and open file descriptors of process `pid`, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line[:6] == "VmRSS:")
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


class Traffic:
    """Subscribers with churn and publishers; counts what subscribers miss."""

    def __init__(self, http: aiohttp.ClientSession, url: str, clients: int, rate: float) -> None:
        self.http = http
        self.url = url
        self.clients = clients
        self.rate = rate
        self.published = 0
        self.received = 0
        self.resumes = 0
        self.gaps = 0
        self._stop = asyncio.Event()

    async def _request(self, ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any]) -> Any:
        await ws.send_str(orjson.dumps(frame).decode())
        while True:
            reply = orjson.loads((await ws.receive(30)).data)
            if reply.get("id") == frame.get("id") and reply["type"] != "message":
                return reply

    async def subscriber(self, n: int) -> None:
        channel = f"agent:soak-{n % 10}"
        last = 0
        ids = itertools.count()
        while not self._stop.is_set():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, TypeError):
                async with self.http.ws_connect(self.url) as ws:
                    await self._request(
                        ws, {"type": "authenticate", "token": _token(f"s{n}"), "id": next(ids)}
                    )
                    frame: dict[str, Any] = {"type": "subscribe", "channel": channel}
                    frame["id"] = next(ids)
                    if last:
                        frame["since"] = last
                        self.resumes += 1
                    await self._request(ws, frame)
                    # Churn: every subscriber drops its connection after a while and resumes.
                    deadline = time.monotonic() + random.uniform(10, 60)
                    while time.monotonic() < deadline and not self._stop.is_set():
                        msg = await _receive(ws, 1.0)
                        if msg is None:
                            continue
                        body = orjson.loads(msg)
                        if body.get("type") == "message" and body.get("seq"):
                            self.received += 1
                            last = body["seq"]
            await asyncio.sleep(random.uniform(0.1, 1.0))

    async def publisher(self) -> None:
        ids = itertools.count()
        while not self._stop.is_set():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, TypeError):
                async with self.http.ws_connect(self.url) as ws:
                    await self._request(
                        ws, {"type": "authenticate", "token": _token("pub"), "id": next(ids)}
                    )
                    while not self._stop.is_set():
                        frame = {
                            "type": "publish",
                            "channel": f"agent:soak-{random.randrange(10)}",
                            "payload": {"at": time.time(), "pad": "p" * random.randrange(2000)},
                            "id": next(ids),
                        }
                        reply = await self._request(ws, frame)
                        if reply["type"] == "published":
                            self.published += 1
                        await asyncio.sleep(1 / self.rate)
            await asyncio.sleep(1.0)

    def stop(self) -> None:
        self._stop.set()


async def _receive(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> str | None:
    try:
        msg = await ws.receive(timeout)
    except TimeoutError:
        return None
    if msg.type is not aiohttp.WSMsgType.TEXT:
        raise aiohttp.ClientError(f"connection ended: {msg.type}")
    return str(msg.data)


# -- attacks ----------------------------------------------------------------------------------


async def _idle_sockets(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    writers = []
    for _ in range(300):
        _, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writers.append(writer)
    await asyncio.sleep(15)  # past the handshake deadline: the gateway has closed them
    for writer in writers:
        writer.transport.abort()


async def _half_upgrades(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    writers = []
    for _ in range(100):
        _, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConn")
        writers.append(writer)
    await asyncio.sleep(15)
    for writer in writers:
        writer.transport.abort()


async def _non_reader(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port, limit=1024)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await reader.readuntil(b"\r\n\r\n")
    for frame in (
        {"type": "authenticate", "token": _token("sloth")},
        {"type": "subscribe", "channel": "agent:soak-0"},
    ):
        payload = orjson.dumps(frame)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        writer.write(bytes((0x81, 0xFE)) + len(payload).to_bytes(2, "big") + mask + masked)
    await asyncio.sleep(40)  # never reads: the gateway cuts it off
    writer.transport.abort()


async def _history_amplification(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(gateway.ws_url) as ws:
        await ws.send_str(orjson.dumps({"type": "authenticate", "token": _token("amp")}).decode())
        await ws.receive(30)
        for n in range(20):
            frame = {"type": "subscribe", "channel": "agent:soak-1", "id": n}
            frame["last" if n % 2 else "since"] = 1 if n % 2 else 0
            await ws.send_str(orjson.dumps(frame).decode())
            await ws.send_str(
                orjson.dumps({"type": "unsubscribe", "channel": "agent:soak-1"}).decode()
            )
        await asyncio.sleep(2)


async def _oversized_headers(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    for _ in range(50):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"A" * 20000)
        writer.write(b"\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.transport.abort()


async def _huge_claims(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    for exp in (1.8e16, 2**70, 1e300):
        token = jwt.encode({"sub": "evil", "exp": exp}, SECRET, algorithm="HS256")
        async with http.get(gateway.url + "/ws", headers={"Authorization": f"Bearer {token}"}):
            pass


ATTACKS: list[Callable[[Gateway, aiohttp.ClientSession], Awaitable[None]]] = [
    _idle_sockets,
    _half_upgrades,
    _non_reader,
    _history_amplification,
    _oversized_headers,
    _huge_claims,
]


# -- the run ----------------------------------------------------------------------------------


def rising(samples: list[dict[str, float]], key: str) -> str | None:
    """Why `key` trends upward over `samples` (after warm-up), or None."""
    values = [s[key] for s in samples]
    if len(values) < 4:
        return None
    half = len(values) // 2
    before, after = statistics.median(values[:half]), statistics.median(values[half:])
    allowed = TOLERANCE[key]
    limit = before * (1 + allowed) if isinstance(allowed, float) else before + allowed
    if after > limit and values[-1] > limit:
        return f"{key} rose from a median of {before:.1f} to {after:.1f} (last {values[-1]:.1f})"
    return None


async def soak(args: argparse.Namespace) -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    workdir = Path(tempfile.mkdtemp(prefix="neurelay-soak-"))
    with EmbeddedNats() as nats:
        gateway = Gateway(workdir, nats.url)
        try:
            async with aiohttp.ClientSession() as http:
                await gateway.ready(http)
                return await _run(args, gateway, http)
        finally:
            gateway.stop()


async def _run(args: argparse.Namespace, gateway: Gateway, http: aiohttp.ClientSession) -> int:
    traffic = Traffic(http, gateway.ws_url, args.clients, args.rate)
    workers = [asyncio.create_task(traffic.subscriber(n)) for n in range(args.clients)]
    workers.append(asyncio.create_task(traffic.publisher()))
    attacks: set[asyncio.Task[None]] = set()
    started = time.monotonic()
    end = started + args.minutes * 60
    next_sample = started
    next_attack = started + args.attack_every
    samples: list[tuple[float, dict[str, float]]] = []
    print(
        "minute  rss_mb  fds  tasks  nats_reconnects  connections  published  received  resumes",
        flush=True,
    )
    for attack in itertools.cycle(ATTACKS):
        while time.monotonic() < min(next_attack, end):
            if time.monotonic() >= next_sample:
                sample = await gateway.sample(http)
                minute = (time.monotonic() - started) / 60
                samples.append((minute, sample))
                print(
                    f"{minute:6.1f} {sample['rss_mb']:7.1f} {sample['fds']:4.0f} "
                    f"{sample['tasks']:6.0f} {sample['nats_reconnects']:16.0f} "
                    f"{sample['connections']:12.0f} {traffic.published:10d} "
                    f"{traffic.received:9d} {traffic.resumes:8d}",
                    flush=True,
                )
                next_sample += args.interval
            await asyncio.sleep(1.0)
        if time.monotonic() >= end:
            break
        task = asyncio.create_task(attack(gateway, http))
        attacks.add(task)
        task.add_done_callback(attacks.discard)
        next_attack += args.attack_every
    traffic.stop()
    for task in [*workers, *attacks]:
        task.cancel()
    await asyncio.gather(*workers, *attacks, return_exceptions=True)
    settled = [s for minute, s in samples if minute >= args.warmup]
    failures = [f for key in TOLERANCE if (f := rising(settled, key)) is not None]
    print(
        f"published {traffic.published}, received {traffic.received}, "
        f"resumes {traffic.resumes}; {len(settled)} samples after {args.warmup} min of warm-up"
    )
    if failures:
        print("FAIL: " + "; ".join(failures))
        return 1
    print("OK: no upward trend in RSS, open files, tasks or NATS reconnects")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0, help="minutes not judged")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--attack-every", type=float, default=30.0, help="seconds")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0, help="publishes per second")
    sys.exit(asyncio.run(soak(parser.parse_args())))


if __name__ == "__main__":
    main()
