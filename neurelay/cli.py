"""The `neurelay` command: run a gateway (`dev`, `gateway`) or the operator, mint tokens, sub, pub.

`neurelay dev` is the one-command start: an embedded NATS with JetStream in
a temporary store, the default namespaces, and a gateway, with a secret and
a ready-to-use token printed. `neurelay operator` runs the Kubernetes
operator. Client commands read the gateway URL and token from options or
from NEURELAY_URL and NEURELAY_TOKEN.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from neurelay import __version__
from neurelay.auth import mint_token
from neurelay.config import (
    AuthSettings,
    GatewayConfig,
    NatsSettings,
    ServerSettings,
    load_config,
)
from neurelay.errors import NeurelayError
from neurelay.operator import running  # light: kopf is imported only when the operator runs

DEFAULT_URL = "ws://127.0.0.1:8080/ws"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
    except NeurelayError as e:
        print(f"neurelay: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neurelay", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="run a gateway with an embedded NATS, for development")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8080)
    dev.add_argument("--jwt-secret", help="HS256 secret (generated when not given)")
    dev.set_defaults(handler=_dev)

    gateway = commands.add_parser("gateway", help="run a production gateway against NATS")
    gateway.add_argument("--config", type=Path, help="YAML or JSON file (reloaded on change)")
    gateway.set_defaults(handler=_gateway)

    operator = commands.add_parser("operator", help="run the Kubernetes operator (kopf)")
    running.add_arguments(operator)
    operator.set_defaults(handler=running.main_from_args)

    token = commands.add_parser("token", help="print a signed HS256 token")
    token.add_argument("--secret", required=True)
    token.add_argument("--sub", required=True, help="user id")
    token.add_argument("--channels", nargs="*", default=[], metavar="PATTERN")
    token.add_argument("--publish", nargs="*", default=[], metavar="PATTERN")
    token.add_argument("--ttl", type=float, default=3600.0, metavar="SECONDS")
    token.add_argument("--admin", action="store_true", help="add the claim admin: true")
    token.add_argument("--info", help="the 'info' claim, a JSON object (shown in presence)")
    token.set_defaults(handler=_token)

    for name, text in (
        ("sub", "print messages of a channel"),
        ("pub", "publish one message"),
        ("presence", "print who is subscribed to a channel, on every replica"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("channel")
        command.add_argument("--url", default=os.environ.get("NEURELAY_URL", DEFAULT_URL))
        command.add_argument("--token", default=os.environ.get("NEURELAY_TOKEN"))
        if name == "sub":
            group = command.add_mutually_exclusive_group()
            group.add_argument("--since", type=int, help="resume after this seq")
            group.add_argument("--last", type=int, help="start with the last N messages")
            command.add_argument("--count", type=int, help="exit after N messages")
            command.set_defaults(handler=_sub)
        elif name == "presence":
            command.add_argument(
                "--stats", action="store_true", help="print only how many users and connections"
            )
            command.set_defaults(handler=_presence)
        else:
            command.add_argument("payload", help="JSON value (a bare word is sent as a string)")
            command.add_argument("--id", help="message id, for de-duplication of retries")
            command.set_defaults(handler=_pub)
    return parser


def _dev(args: argparse.Namespace) -> int:
    from neurelay.embedded import EmbeddedNats
    from neurelay.gateway.observability import configure_logging
    from neurelay.gateway.serving import run, serve

    secret = args.jwt_secret or secrets.token_urlsafe(32)
    print("neurelay dev: starting NATS with JetStream ...", flush=True)
    with EmbeddedNats() as nats:
        print(f"neurelay dev: NATS ready at {nats.url} (store {nats.store_dir})", flush=True)
        config = GatewayConfig(
            server=ServerSettings(host=args.host, port=args.port),
            nats=NatsSettings(servers=[nats.url]),
            auth=AuthSettings(secret=secret),
            # Every namespace shows who is in a channel, live, in the console.
            namespaces={
                name: namespace.model_copy(update={"presence": True, "join_leave": True})
                for name, namespace in GatewayConfig().namespaces.items()
            },
            allowed_origins=["*"],
            console=True,
            log_level="WARNING",
        )
        configure_logging(config.log_level)
        token = mint_token(secret, "dev", channels=["*"], publish=["*"], ttl_seconds=86_400)

        def ready(port: int) -> None:
            url = f"ws://{args.host}:{port}/ws"
            print(
                f"neurelay dev: gateway ready at {url}\n"
                f"  JWT secret: {secret}\n"
                f"  token (user 'dev', all channels, 24 h):\n    {token}\n"
                f"  try:  NEURELAY_URL={url} NEURELAY_TOKEN=<token> neurelay sub system\n"
                f"  console: http://{args.host}:{port}/console\n"
                f"Press Ctrl-C to stop.",
                flush=True,
            )

        run(serve(config, on_ready=ready, dev_token=token))
    print("neurelay dev: stopped", flush=True)
    return 0


def _gateway(args: argparse.Namespace) -> int:
    from neurelay.gateway.observability import configure_logging
    from neurelay.gateway.serving import run, serve

    config = load_config(args.config)
    configure_logging(config.log_level)
    run(serve(config, args.config))
    return 0


def _token(args: argparse.Namespace) -> int:
    print(
        mint_token(
            args.secret,
            args.sub,
            channels=args.channels,
            publish=args.publish,
            ttl_seconds=args.ttl,
            admin=args.admin,
            info=_info(args.info),
        )
    )
    return 0


def _info(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        info = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise NeurelayError(f"--info is not JSON: {e}") from e
    if not isinstance(info, dict):
        raise NeurelayError("--info must be a JSON object")
    return info


def _require_token(args: argparse.Namespace) -> str:
    if not args.token:
        raise NeurelayError("a token is required: --token or NEURELAY_TOKEN")
    token: str = args.token
    return token


def _sub(args: argparse.Namespace) -> int:
    from neurelay.client import Client

    async def follow() -> None:
        async with Client(args.url, _require_token(args)) as client:
            subscription = await client.subscribe(args.channel, since=args.since, last=args.last)
            received = 0
            async for message in subscription:
                line = {
                    "channel": message.channel,
                    "seq": message.seq,
                    "id": message.id,
                    "timestamp": message.timestamp,
                    "payload": message.payload,
                }
                print(orjson.dumps(line).decode(), flush=True)
                received += 1
                if args.count is not None and received >= args.count:
                    return

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(follow())
    return 0


def _pub(args: argparse.Namespace) -> int:
    from neurelay.client import Client

    try:
        payload = orjson.loads(args.payload)
    except orjson.JSONDecodeError:
        payload = args.payload

    async def send() -> None:
        async with Client(args.url, _require_token(args), reconnect=False) as client:
            published = await client.publish(args.channel, payload, id=args.id)
            print(
                orjson.dumps(
                    {
                        "channel": published.channel,
                        "seq": published.seq,
                        "duplicate": published.duplicate,
                    }
                ).decode()
            )

    asyncio.run(send())
    return 0


def _presence(args: argparse.Namespace) -> int:
    from neurelay.client import Client

    async def ask() -> None:
        async with Client(args.url, _require_token(args), reconnect=False) as client:
            if args.stats:
                stats = await client.presence_stats(args.channel)
                line = {"channel": stats.channel, "users": stats.users}
                print(orjson.dumps({**line, "connections": stats.connections}).decode())
                return
            presence = await client.presence(args.channel)
            for member in presence.clients:
                entry: dict[str, Any] = {"user": member.user, "connection": member.connection}
                if member.info is not None:
                    entry["info"] = member.info
                print(orjson.dumps(entry).decode())
            if presence.truncated:
                print("neurelay: the list was cut at the gateway's limit", file=sys.stderr)

    asyncio.run(ask())
    return 0


if __name__ == "__main__":
    sys.exit(main())
