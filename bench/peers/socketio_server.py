"""The python-socketio peer: the same job as the gateway, the Socket.IO way.

One process, python-socketio's AsyncServer on aiohttp, on uvloop like the
gateway. Rooms are channels. A client connects with `auth={"token": <jwt>}`;
the JWT is verified with PyJWT exactly as the gateway verifies it (HS256,
`exp` and `sub` required), and the same channel rules apply: `system` for
everyone, `user:<sub>` for its owner, other channels by the `channels` and
`publish` glob claims. Events:

- `subscribe` (channel) -> joins the room; acknowledges "ok" or an error string
- `publish` ({"channel", "payload"}) -> emits `message` ({"channel", "payload",
  "timestamp"}) to the room; no history, no storage, no sequence numbers

Run: python bench/peers/socketio_server.py --port 8081 --secret S
"""

from __future__ import annotations

import argparse
import time
from fnmatch import fnmatchcase
from typing import Any

import jwt
import socketio
from aiohttp import web


def build(secret: str) -> web.Application:
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        cors_allowed_origins="*",
        ping_interval=30,
        ping_timeout=15,
        transports=["websocket"],
    )
    app = web.Application()
    sio.attach(app)

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: dict[str, Any] | None) -> bool:
        token = (auth or {}).get("token")
        if not isinstance(token, str):
            return False
        try:
            claims = jwt.decode(
                token, secret, algorithms=["HS256"], options={"require": ["exp", "sub"]}
            )
        except jwt.PyJWTError:
            return False
        await sio.save_session(
            sid,
            {
                "user": str(claims["sub"]),
                "channels": tuple(claims.get("channels") or ()),
                "publish": tuple(claims.get("publish") or ()),
            },
        )
        return True

    @sio.event
    async def subscribe(sid: str, channel: Any) -> str:
        if not isinstance(channel, str):
            return "bad_request"
        session = await sio.get_session(sid)
        namespace, _, ident = channel.partition(":")
        if channel == "system":
            allowed = True
        elif namespace == "user":
            allowed = ident == session["user"]
        else:
            allowed = any(fnmatchcase(channel, p) for p in session["channels"])
        if not allowed:
            return "forbidden"
        await sio.enter_room(sid, channel)
        return "ok"

    @sio.event
    async def publish(sid: str, data: Any) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("channel"), str):
            return
        channel = data["channel"]
        session = await sio.get_session(sid)
        if not any(fnmatchcase(channel, p) for p in session["publish"]):
            return
        message = {
            "channel": channel,
            "payload": data.get("payload"),
            "timestamp": int(time.time() * 1000),
        }
        await sio.emit("message", message, room=channel)

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    app = build(args.secret)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        loop_factory = None
    import asyncio

    async def serve() -> None:
        runner = web.AppRunner(app, handle_signals=True)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        print(f"socketio peer listening on {args.host}:{args.port}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve())


if __name__ == "__main__":
    main()
