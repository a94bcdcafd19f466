"""Server API: what backend services holding an admin token may see and do, across replicas.

Every route takes `Authorization: Bearer <jwt>` whose token carries the claim
`admin: true` (other valid tokens get 403 `forbidden`) and answers errors as
the rest of the HTTP API does (`web.refusal`):

- `GET /api/v1/channels/{channel}/presence` → `{"channel", "clients", "truncated"?}`
- `GET /api/v1/channels/{channel}/presence/stats` → `{"channel", "users", "connections"}`
- `GET /api/v1/channels?namespace=<ns>` → `{"channels": [{"channel", "subscribers"}]}`
- `POST /api/v1/users/{user}/disconnect` → `{"user", "connections"}` (closed with 4008)
- `POST /api/v1/users/{user}/revoke` `{"issued_before": ms}` → `{"user", "issued_before",
  "connections"}` (tokens issued before refused everywhere; open ones closed with 4009)
- `POST /api/v1/users/{user}/unsubscribe` `{"channel"}` → `{"user", "channel", "connections"}`

Handlers parse and authorize, then call the `Gateway`.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from neurelay.auth import MAX_CLAIM_STRING, Principal
from neurelay.errors import ProtocolError
from neurelay.gateway.http_api import request_principal
from neurelay.gateway.web import GATEWAY_KEY, refusal
from neurelay.protocol.channels import Channel, is_valid_namespace, parse_channel
from neurelay.protocol.codecs import JSON
from neurelay.protocol.codes import ErrorCode

# A command body holds one or two small fields; anything longer is not one.
_MAX_BODY_BYTES = 4096
_MAX_SAFE_INT = 2**53 - 1


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v1/channels", channels),
        web.get("/api/v1/channels/{channel}/presence", presence),
        web.get("/api/v1/channels/{channel}/presence/stats", presence_stats),
        web.post("/api/v1/users/{user}/disconnect", disconnect),
        web.post("/api/v1/users/{user}/revoke", revoke),
        web.post("/api/v1/users/{user}/unsubscribe", unsubscribe),
    ]


def _admin(request: web.Request) -> Principal:
    principal = request_principal(request)
    request.app[GATEWAY_KEY].authorize_server_api(principal)
    return principal


def _presence_channel(request: web.Request) -> Channel:
    """The path's channel, when the admin may see who is in it."""
    principal = _admin(request)
    channel = parse_channel(request.match_info["channel"])
    request.app[GATEWAY_KEY].authorize_presence(principal, channel)
    return channel


async def presence(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    try:
        channel = _presence_channel(request)
        listing = await gateway.presence(channel, binary=False)
    except ProtocolError as e:
        return refusal(gateway, e)
    body: dict[str, Any] = {"channel": channel.name, "clients": []}
    if listing.truncated:
        body["truncated"] = True
    return web.Response(
        body=JSON.encode_with_list(body, "clients", listing.entries),
        content_type="application/json",
    )


async def presence_stats(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    try:
        channel = _presence_channel(request)
        users, connections = await gateway.presence_stats(channel)
    except ProtocolError as e:
        return refusal(gateway, e)
    return _json({"channel": channel.name, "users": users, "connections": connections})


async def channels(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    try:
        _admin(request)
        namespace = request.query.get("namespace")
        if namespace is not None and not (namespace == "system" or is_valid_namespace(namespace)):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "'namespace' is not a namespace name")
        found = await gateway.channels(namespace)
    except ProtocolError as e:
        return refusal(gateway, e)
    return _json({"channels": found})


async def disconnect(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    try:
        _admin(request)
        user = _user(request)
        count = await gateway.disconnect_user(user)
    except ProtocolError as e:
        return refusal(gateway, e)
    return _json({"user": user, "connections": count})


async def revoke(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    try:
        _admin(request)
        user = _user(request)
        body = await _body(request, {"issued_before"})
        before = body.get("issued_before")
        if isinstance(before, bool) or not isinstance(before, int) or before < 0:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, "'issued_before' must be milliseconds since the epoch"
            )
        # A cut-off in the future would refuse tokens not issued yet: it means "now".
        before = min(before, int(time.time() * 1000), _MAX_SAFE_INT)
        count = await gateway.revoke_user(user, before)
    except ProtocolError as e:
        return refusal(gateway, e)
    return _json({"user": user, "issued_before": before, "connections": count})


async def unsubscribe(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    try:
        _admin(request)
        user = _user(request)
        body = await _body(request, {"channel"})
        channel = parse_channel(body.get("channel"))
        count = await gateway.unsubscribe_user(user, channel)
    except ProtocolError as e:
        return refusal(gateway, e)
    return _json({"user": user, "channel": channel.name, "connections": count})


def _user(request: web.Request) -> str:
    user = request.match_info["user"]
    if not 0 < len(user) <= MAX_CLAIM_STRING:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"a user id has 1 to {MAX_CLAIM_STRING} characters"
        )
    return user


async def _body(request: web.Request, fields: set[str]) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > _MAX_BODY_BYTES:
        raise ProtocolError(ErrorCode.MESSAGE_TOO_LARGE, f"body exceeds {_MAX_BODY_BYTES} bytes")
    data = await request.content.read(_MAX_BODY_BYTES + 1)
    if len(data) > _MAX_BODY_BYTES:
        raise ProtocolError(ErrorCode.MESSAGE_TOO_LARGE, f"body exceeds {_MAX_BODY_BYTES} bytes")
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"invalid JSON: {e}") from e
    if not isinstance(body, dict) or not set(body) <= fields:
        names = ", ".join(sorted(fields))
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"body must be an object with {names}")
    return body


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")
