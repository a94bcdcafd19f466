"""GatewayConfig: the one configuration model the gateway reads and the operator writes.

Grouped into small per-topic models whose field descriptions state unit,
default and reason; the operator embeds the same model in its ConfigMap, and
docs/configuration.md is checked against it. `load_config` reads a YAML or
JSON file and overlays environment variables named
`NEURELAY__<SECTION>__<FIELD>` (lists and objects written as JSON).
It is longer than most modules on purpose: it is the whole contract in one
place, each section a small model of documented fields with no logic, and
the CRD, the chart schema and docs/configuration.md are generated from it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from neurelay.errors import ConfigError
from neurelay.protocol.channels import SYSTEM, is_valid_namespace, is_valid_prefix

ENV_PREFIX = "NEURELAY__"
MiB = 1024 * 1024


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = Field("0.0.0.0", description="Address the HTTP and WebSocket listener binds to.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port of the listener (0 = any free).")
    handshake_timeout_seconds: float = Field(
        10.0,
        ge=0.5,
        le=300,
        description="Time a new connection has to send a complete request (the WebSocket "
        "upgrade included) and a kept-alive one its next request; then it is closed, so raw "
        "sockets that never send a byte and half-sent requests cannot hold file descriptors.",
    )
    max_pending_connections: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Connections per process that have not sent a complete request; a new one "
        "beyond this closes the longest pending one.",
    )


class NatsSettings(_Section):
    servers: list[str] = Field(
        default_factory=lambda: ["nats://127.0.0.1:4222"],
        min_length=1,
        description="NATS server URLs; the client fails over between them.",
    )
    credentials_file: str | None = Field(None, description="NATS .creds file, if NATS needs one.")
    subject_prefix: str = Field(
        "neurelay",
        description="First subject token of every subject and stream of this gateway, so "
        "gateways sharing one NATS stay isolated. Letters, digits, '-' and '_'.",
    )
    manage_streams: bool = Field(
        True,
        description="Create the namespaces' JetStream streams and keep their whole "
        "configuration as declared, at start-up, reconnect and reload. A change JetStream "
        "cannot make in place (storage, say) is not retried: /readyz answers 503 naming the "
        "stream and field until the configuration is put right. Off when the operator owns "
        "the streams.",
    )
    connect_timeout_seconds: float = Field(5.0, ge=0.1, le=60, description="Per-attempt timeout.")
    request_timeout_seconds: float = Field(
        5.0, ge=0.1, le=60, description="JetStream publish and history requests give up after this."
    )
    replay_concurrency: int = Field(
        8,
        ge=1,
        le=1024,
        description="History reads (resume with `since`, `last`, gap repair, the history API) "
        "in flight at once per gateway; more wait their turn, so replays cannot swamp JetStream "
        "or the gateway's NATS connection. A connection's own frames are handled in order, so "
        "one connection runs at most one replay at a time.",
    )
    replay_batch_bytes: int = Field(
        MiB,
        ge=64 * 1024,
        le=64 * MiB,
        description="Bytes of messages JetStream sends in answer to one history request (at "
        "least one message); a replay reads in such batches, so no single answer floods the "
        "NATS connection.",
    )

    @pydantic.field_validator("subject_prefix")
    @classmethod
    def _prefix_is_a_subject_token(cls, value: str) -> str:
        if not is_valid_prefix(value):
            raise ValueError("must be 1-64 letters, digits, '-' or '_'")
        return value


Audience = Literal["token", "authenticated", "nobody"]

Algorithm = Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384"]


class AuthSettings(_Section):
    algorithm: Algorithm = Field(
        "HS256",
        description="The one JWT algorithm accepted. HS* needs `secret`, RS*/ES* `public_key`; "
        "tokens signed otherwise (including alg=none) are refused.",
    )
    secret: pydantic.SecretStr | None = Field(None, description="HMAC secret for HS* tokens.")
    secret_file: str | None = Field(None, description="File holding the HMAC secret.")
    public_key: str | None = Field(None, description="PEM public key for RS*/ES* tokens.")
    public_key_file: str | None = Field(None, description="File holding the PEM public key.")
    issuer: str | None = Field(None, description="Required `iss` claim, when set.")
    audience: str | None = Field(None, description="Required `aud` claim, when set.")
    leeway_seconds: float = Field(
        0.0, ge=0, le=300, description="Clock skew tolerated on `exp` and `nbf`."
    )
    max_token_lifetime_seconds: float = Field(
        10 * 366 * 86_400.0,
        ge=60,
        le=10 * 366 * 86_400,
        description="Longest token lifetime accepted: `exp - iat`, or `exp - now` for a token "
        "without `iat`. A revocation is kept this long, since no token it covers outlives "
        "it; set it to the longest lifetime your issuer grants (default: ten years).",
    )

    @pydantic.model_validator(mode="after")
    def _key_matches_algorithm(self) -> AuthSettings:
        hmac = self.algorithm.startswith("HS")
        has_secret = self.secret is not None or self.secret_file is not None
        has_key = self.public_key is not None or self.public_key_file is not None
        if hmac and has_key:
            raise ValueError(f"{self.algorithm} uses a secret; remove public_key")
        if not hmac and has_secret:
            raise ValueError(f"{self.algorithm} uses a public key; remove secret")
        return self


class LimitSettings(_Section):
    connections_per_user: int = Field(
        5, ge=1, le=10_000, description="Open connections one user may hold across all replicas."
    )
    subscriptions_per_connection: int = Field(
        50, ge=1, le=100_000, description="Channels one connection may follow."
    )
    max_message_bytes: int = Field(
        MiB,
        ge=256,
        le=64 * MiB,
        description="Largest client frame, in bytes, checked before parsing.",
    )
    messages_per_second: float = Field(
        100.0, gt=0, le=1_000_000, description="Sustained client frames per second per connection."
    )
    burst: int | None = Field(
        None, ge=1, description="Frames a connection may send at once; default one second's worth."
    )
    send_queue_frames: int = Field(
        4096,
        ge=16,
        le=1_000_000,
        description="Frames queued for a client that reads slowly before it is disconnected.",
    )
    send_queue_bytes: int = Field(
        16 * MiB,
        ge=64 * 1024,
        le=1024 * MiB,
        description="Bytes queued for a slow client before it is disconnected.",
    )
    replay_bytes: int = Field(
        8 * MiB,
        ge=64 * 1024,
        le=1024 * MiB,
        description="Bytes of history one subscribe, gap repair or history request may "
        "deliver. When more is retained after `since` (or in the last N), the newest that fit "
        "are delivered with `recovered: false`; a single message is always delivered. Capped at "
        "`send_queue_bytes`, so a replay never cuts its own client off as a slow consumer.",
    )
    http_requests_per_second: float = Field(
        100.0,
        gt=0,
        le=1_000_000,
        description="Sustained HTTP API requests per second per user (token subject), per "
        "replica; more are answered 429 `rate_limited`.",
    )
    http_burst: int | None = Field(
        None,
        ge=1,
        description="HTTP API requests one user may make at once; default one second's worth.",
    )
    http_publish_messages_per_second: float = Field(
        1000.0,
        gt=0,
        le=1_000_000,
        description="Sustained messages per second one user (token subject) may publish "
        "through `POST /api/v1/publish`, per replica: a batch costs its number of messages "
        "(on top of counting as one request). More are answered 429 `rate_limited`.",
    )
    http_publish_burst: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Messages one user may publish through the HTTP API at once; default one "
        "second's worth. Also the largest batch (at most 1,000): a bigger one is refused with "
        "400 `bad_request`, since it could never be carried out.",
    )
    http_publish_bytes_in_flight: int = Field(
        8 * MiB,
        ge=64 * 1024,
        le=1024 * MiB,
        description="Bytes of `POST /api/v1/publish` requests being carried out at once, per "
        "replica, counting each request's body and 64 KiB for the messages it keeps in flight. "
        "Bounds the gateway's memory and the NATS pipeline ahead of WebSocket publishes "
        "whatever the number of clients; a request that does not fit waits its turn up to 5 s "
        "(behind at most as much again), then is answered 503 `unavailable`.",
    )
    auth_timeout_seconds: float = Field(
        10.0,
        ge=0.2,
        le=600,
        description="Time to authenticate after connecting, or to re-authenticate after expiry.",
    )
    heartbeat_seconds: float = Field(
        30.0,
        ge=0.2,
        le=600,
        description="WebSocket ping interval; no pong within half of it closes.",
    )
    connection_lease_seconds: float = Field(
        30.0,
        ge=3,
        le=3600,
        description="Lifetime of a replica's heartbeat in the cross-replica connection count; "
        "rewritten at a third of it, so a crashed replica's connections stop counting after it.",
    )

    @property
    def http_publish_burst_messages(self) -> int:
        """Messages one user may publish through the HTTP API at once."""
        return self.http_publish_burst or max(1, int(self.http_publish_messages_per_second))

    @property
    def replay_budget(self) -> int:
        """Bytes one replay may deliver: `replay_bytes`, capped at the send queue."""
        return min(self.replay_bytes, self.send_queue_bytes)


class NamespaceSettings(_Section):
    history_messages: int = Field(
        100,
        ge=0,
        le=1_000_000,
        description="Messages kept per channel for resume; 0 = no history, core NATS only.",
    )
    history_max_age_seconds: float = Field(
        86_400.0,
        ge=0,
        description="Oldest retained message age; 0 = no age limit. When under two minutes, "
        "it is also the publish de-duplication window (JetStream keeps none longer).",
    )
    storage: Literal["file", "memory"] = Field("file", description="JetStream storage kind.")
    replicas: Literal[1, 3, 5] = Field(1, description="JetStream stream replicas.")
    max_message_bytes: int | None = Field(
        None, ge=256, description="Smaller frame limit for this namespace, when set."
    )
    subscribe: Audience = Field(
        "token",
        description="Who may subscribe. token: users whose token lists a matching channel "
        "pattern; authenticated: every authenticated user; nobody: no client. `system` stays "
        "readable by every authenticated user and `user:<id>` by its owner alone.",
    )
    publish: Audience = Field(
        "token",
        description="Who may publish through the gateway. token: users whose token lists a "
        "matching publish pattern; authenticated: every authenticated user; nobody: no "
        "client (only backends publishing to NATS directly).",
    )
    presence: bool = Field(
        False,
        description="Answer `presence` and `presence_stats` for this namespace's channels "
        "(who is subscribed, across replicas). Off by default: the list reveals who reads.",
    )
    join_leave: bool = Field(
        False,
        description="Send `join` and `leave` frames to a channel's subscribers when another "
        "connection subscribes, unsubscribes or goes away. Off by default: it costs a frame "
        "per subscriber per change.",
    )

    @property
    def keeps_history(self) -> bool:
        return self.history_messages > 0


def _default_namespaces() -> dict[str, NamespaceSettings]:
    return {
        "agent": NamespaceSettings(history_messages=100),
        "user": NamespaceSettings(history_messages=100),
        "conversation": NamespaceSettings(history_messages=1000),
        "metrics": NamespaceSettings(history_messages=0),
        SYSTEM: NamespaceSettings(history_messages=100),
    }


class PresenceSettings(_Section):
    ttl_seconds: float = Field(
        30.0,
        ge=0.5,
        le=300,
        description="A replica that has died is taken for dead within this long of its last "
        "sign of life: its connections leave the presence of every channel. Replicas announce "
        "themselves every third of it and one silent for five sixths of it is dead.",
    )
    max_clients: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Entries in one `presence` answer; a longer list is cut and marked "
        "`truncated: true`, so one request cannot produce an unbounded reply.",
    )
    request_timeout_seconds: float = Field(
        2.0,
        ge=0.1,
        le=60,
        description="How long a presence query or server API command waits for the other "
        "replicas; a replica that does not answer in time is left out of the answer.",
    )


class DrainSettings(_Section):
    period_seconds: float = Field(
        10.0,
        ge=0,
        le=600,
        description="On SIGTERM, connections are closed with 1012 spread over this period.",
    )


class GatewayConfig(_Section):
    """Everything one gateway process needs; shared by the gateway and the operator."""

    server: ServerSettings = Field(
        default_factory=ServerSettings, description="The HTTP and WebSocket listener."
    )
    nats: NatsSettings = Field(
        default_factory=NatsSettings, description="NATS connection, subjects and streams."
    )
    auth: AuthSettings = Field(
        default_factory=AuthSettings, description="How client tokens (JWT) are verified."
    )
    limits: LimitSettings = Field(
        default_factory=LimitSettings, description="Limits that protect the service."
    )
    namespaces: dict[str, NamespaceSettings] = Field(
        default_factory=_default_namespaces,
        description="Channel namespaces this gateway serves, with their history.",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to connect, as `scheme://host[:port]`: the host may "
        "be `*` or start with `*.` (any subdomain), the port may be `*`; '*' alone allows any "
        "origin. Requests without Origin and same-origin requests are always allowed.",
    )
    console: bool = Field(
        False,
        description="Serve the live console page at /console (the browser client at "
        "/client/neurelay.js is always served). On in `neurelay dev`.",
    )
    drain: DrainSettings = Field(
        default_factory=DrainSettings, description="Graceful shutdown on SIGTERM."
    )
    presence: PresenceSettings = Field(
        default_factory=PresenceSettings,
        description="Presence, join/leave and the server API across replicas.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Least severe level logged (JSON lines on stderr)."
    )
    reload_interval_seconds: float = Field(
        2.0, gt=0, le=300, description="How often the configuration file is checked for changes."
    )

    @pydantic.field_validator("namespaces")
    @classmethod
    def _namespace_names(cls, value: dict[str, NamespaceSettings]) -> dict[str, NamespaceSettings]:
        for name in value:
            if name != SYSTEM and not is_valid_namespace(name):
                raise ValueError(f"namespace {name!r} must match [a-z][a-z0-9-]{{0,31}}")
        return value


# Sections whose change takes effect only after a restart; the rest apply live.
RESTART_SECTIONS = frozenset({"server", "nats"})


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read `path` (YAML or JSON; None for defaults), overlay env variables, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
            loaded = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read configuration {path}: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"configuration {path} must be a mapping at the top level")
        data = loaded or {}
    _overlay_environment(data, os.environ if environ is None else environ)
    try:
        return GatewayConfig.model_validate(data)
    except pydantic.ValidationError as e:
        raise ConfigError(f"invalid configuration: {e}") from e


def _overlay_environment(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    if "namespaces" not in data and any(
        name.startswith(ENV_PREFIX + "NAMESPACES__") for name in environ
    ):
        # A variable tunes one namespace; it must not make the other defaults vanish.
        data["namespaces"] = {
            name: settings.model_dump() for name, settings in _default_namespaces().items()
        }
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        if not path:
            continue
        value: Any = raw
        if raw.lstrip()[:1] in ("[", "{"):
            try:
                value = json.loads(raw)
            except ValueError as e:
                raise ConfigError(f"{name} is not valid JSON: {e}") from e
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name} sets a field inside {part!r}, which is not a section")
            node = child
        node[path[-1]] = value
