"""JWT authentication and channel authorization.

`TokenVerifier` turns a token into a `Principal` or raises `ProtocolError`
with `auth_failed` or `token_expired`. Exactly one algorithm is accepted, the
one configured, so `alg: none` and algorithm-confusion tokens are refused.
`exp` and `sub` are required; `exp`, `iat` and `nbf` must be finite,
non-negative numbers (not booleans) within sane bounds, checked before the
expiry is (so `exp: true` or `exp: -5` is `auth_failed`, never read as an
expired time), and an `exp` more than `MAX_TOKEN_LIFETIME_SECONDS` ahead is
refused, so no time a reply carries can overflow 64 bits; `channels` and
`publish` are lists of glob patterns (`agent:*`, `conversation:42`); `info`
is a JSON object of at most 1 KiB shown in presence, which every codec must
send alike (no NaN, infinities or lone surrogates); `sub` and the patterns
must be text UTF-8 can carry (no lone surrogates), as the gateway hashes,
sends and matches them; `admin: true` opens the
server API; a lifetime over the configured `max_token_lifetime_seconds` is
refused, which bounds how long a revocation must be remembered
(`Revocations`). `may_subscribe` and `may_publish` apply the rules of
docs/protocol.md: `system` is readable by every authenticated user and
`user:<sub>` only by its owner, whatever the patterns.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import jwt
import orjson

from neurelay.config import Audience, AuthSettings
from neurelay.errors import ConfigError, ProtocolError
from neurelay.protocol.channels import SYSTEM, Channel
from neurelay.protocol.codes import ErrorCode

USER_NAMESPACE = "user"
MAX_PATTERNS = 1000
MAX_CLAIM_STRING = 256
# Beyond any real token's life; keeps `exp` in milliseconds far inside a signed 64-bit integer.
MAX_TOKEN_LIFETIME_SECONDS = 10 * 366 * 86_400
_TIME_CLAIMS = ("exp", "iat", "nbf")
MAX_INFO_BYTES = 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who a connection acts for, and until when."""

    user: str
    subscribe: tuple[str, ...]
    publish: tuple[str, ...]
    expires_at: float
    issued_at: float | None = None
    admin: bool = False
    info: Mapping[str, Any] | None = dataclasses.field(default=None, compare=False)

    @property
    def expires_at_ms(self) -> int:
        return int(self.expires_at * 1000)


def issued_before(principal: Principal, cut_off_ms: int) -> bool:
    """Whether `principal`'s token was issued before a revocation's cut-off.

    Compared in whole seconds, as `iat` is written: a token issued in the second of the
    cut-off stays valid, so a backend that revokes "now" and then issues a new token at
    once does not see the new one refused.
    """
    return math.floor(principal.issued_at or 0.0) < cut_off_ms // 1000


class Revocations:
    """Per user, the time (ms) before which their tokens are refused; entries expire.

    A token without `iat` counts as issued at the epoch, so a revocation covers it.
    """

    def __init__(self) -> None:
        self._before: dict[str, tuple[int, float]] = {}

    def revoke(self, user: str, issued_before_ms: int, until: float) -> int:
        """Record a revocation lasting until `until` (s); returns the one now in force (ms)."""
        current = self._before.get(user)
        if current is not None and current[0] >= issued_before_ms:
            issued_before_ms = current[0]
            until = max(until, current[1])
        self._before[user] = (issued_before_ms, until)
        return issued_before_ms

    def forget(self, user: str) -> None:
        self._before.pop(user, None)

    def cut_off(self, user: str, now: float) -> int | None:
        """The cut-off (ms) in force for `user`, or None."""
        entry = self._before.get(user)
        return entry[0] if entry is not None and now < entry[1] else None

    def revoked(self, principal: Principal, now: float) -> bool:
        entry = self._before.get(principal.user)
        if entry is None:
            return False
        if now >= entry[1]:
            del self._before[principal.user]
            return False
        return issued_before(principal, entry[0])

    def check(self, principal: Principal, now: float) -> Principal:
        """`principal`, or ProtocolError(auth_failed) when its token is revoked."""
        if self.revoked(principal, now):
            raise ProtocolError(ErrorCode.AUTH_FAILED, "token has been revoked")
        return principal


def may_subscribe(principal: Principal, channel: Channel, audience: Audience = "token") -> bool:
    """`audience` is the namespace's `subscribe` setting; `system` and `user` have fixed rules."""
    if channel.namespace == SYSTEM:
        return True
    if channel.namespace == USER_NAMESPACE:
        return channel.id == principal.user
    return _admits(audience, principal.subscribe, channel)


def may_publish(principal: Principal, channel: Channel, audience: Audience = "token") -> bool:
    """`audience` is the namespace's `publish` setting."""
    return _admits(audience, principal.publish, channel)


def _admits(audience: Audience, patterns: tuple[str, ...], channel: Channel) -> bool:
    if audience == "nobody":
        return False
    if audience == "authenticated":
        return True
    return _matches(patterns, channel.name)


# Asked for every publish: a client publishes to few channels, each matched once.
@functools.lru_cache(maxsize=4096)
def _matches(patterns: tuple[str, ...], name: str) -> bool:
    return any(fnmatchcase(name, pattern) for pattern in patterns)


class TokenVerifier:
    """Verifies tokens against the configured key; build a new one when the settings change."""

    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        algorithm = jwt.get_algorithm_by_name(settings.algorithm)
        try:
            # Parsed once here: an unusable key fails at start-up or reload, not per token.
            self._key = algorithm.prepare_key(_load_key(settings))
        except (jwt.InvalidKeyError, ValueError, TypeError) as e:
            raise ConfigError(f"auth key unusable for {settings.algorithm}: {e}") from e

    def verify(self, token: str) -> Principal:
        settings = self._settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[settings.algorithm],
                issuer=settings.issuer,
                audience=settings.audience,
                leeway=settings.leeway_seconds,
                # PyJWT reads `exp` with int(): `true` would be 1, an expired time. The
                # expiry is checked below, once the claim is known to be a time.
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": settings.audience is not None,
                    "verify_exp": False,
                },
            )
        except jwt.InvalidTokenError as e:
            raise ProtocolError(ErrorCode.AUTH_FAILED, f"invalid token: {e}") from e
        except (OverflowError, ValueError, TypeError) as e:
            # PyJWT converts time claims with int(): infinities and the like end up here.
            raise ProtocolError(
                ErrorCode.AUTH_FAILED, "invalid token: a time claim is not a time"
            ) from e
        for name in _TIME_CLAIMS:
            _claim_time(claims.get(name), name)
        expires_at = float(claims["exp"])
        now = time.time()
        if expires_at <= now - settings.leeway_seconds:
            raise ProtocolError(ErrorCode.TOKEN_EXPIRED, "token has expired")
        if expires_at > now + MAX_TOKEN_LIFETIME_SECONDS:
            raise ProtocolError(
                ErrorCode.AUTH_FAILED,
                f"claim 'exp' lies more than {MAX_TOKEN_LIFETIME_SECONDS} seconds ahead",
            )
        issued_at = None if claims.get("iat") is None else float(claims["iat"])
        start = now if issued_at is None else issued_at
        if expires_at - start > settings.max_token_lifetime_seconds:
            raise ProtocolError(
                ErrorCode.AUTH_FAILED,
                f"token lives longer than {settings.max_token_lifetime_seconds:g} seconds",
            )
        admin = claims.get("admin", False)
        if not isinstance(admin, bool):
            raise ProtocolError(ErrorCode.AUTH_FAILED, "claim 'admin' must be a boolean")
        return Principal(
            user=_claim_string(claims.get("sub"), "sub"),
            subscribe=_claim_patterns(claims.get("channels"), "channels"),
            publish=_claim_patterns(claims.get("publish"), "publish"),
            expires_at=expires_at,
            issued_at=issued_at,
            admin=admin,
            info=_claim_info(claims.get("info")),
        )


def _load_key(settings: AuthSettings) -> str:
    if settings.algorithm.startswith("HS"):
        if settings.secret is not None:
            key = settings.secret.get_secret_value()
        elif settings.secret_file is not None:
            key = _read(settings.secret_file).strip()
        else:
            raise ConfigError(
                f"auth.secret or auth.secret_file is required for {settings.algorithm}"
            )
    elif settings.public_key is not None:
        key = settings.public_key
    elif settings.public_key_file is not None:
        key = _read(settings.public_key_file)
    else:
        raise ConfigError(
            f"auth.public_key or auth.public_key_file is required for {settings.algorithm}"
        )
    if not key:
        raise ConfigError("the authentication key is empty")
    return key


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read key file {path}: {e}") from e


def _claim_string(value: object, name: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_CLAIM_STRING:
        raise ProtocolError(
            ErrorCode.AUTH_FAILED, f"claim '{name}' must be a string of 1 to {MAX_CLAIM_STRING}"
        )
    if not _is_text(value):
        raise ProtocolError(ErrorCode.AUTH_FAILED, f"claim '{name}' holds a lone surrogate")
    return value


def _is_text(value: str) -> bool:
    """Whether UTF-8 can carry `value`: JSON's `\\ud800` escape decodes to a lone surrogate."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _claim_time(value: object, name: str) -> None:
    """A time claim, when present: a finite, non-negative number of seconds since the epoch."""
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= time.time() + MAX_TOKEN_LIFETIME_SECONDS
    ):
        raise ProtocolError(ErrorCode.AUTH_FAILED, f"claim '{name}' is not a sane time")


def _claim_patterns(value: object, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_PATTERNS:
        raise ProtocolError(
            ErrorCode.AUTH_FAILED, f"claim '{name}' must be a list of at most {MAX_PATTERNS}"
        )
    return tuple(_claim_string(item, name) for item in value)


def _claim_info(value: object) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolError(ErrorCode.AUTH_FAILED, "claim 'info' must be a JSON object")
    try:
        encoded = orjson.dumps(value)
    except TypeError as e:  # orjson.JSONEncodeError: surrogates, depth, ints past 64 bits
        raise ProtocolError(
            ErrorCode.AUTH_FAILED, f"claim 'info' cannot be sent to clients: {e}"
        ) from e
    if len(encoded) > MAX_INFO_BYTES:
        raise ProtocolError(
            ErrorCode.AUTH_FAILED, f"claim 'info' is over {MAX_INFO_BYTES} bytes encoded"
        )
    if not _all_numbers_finite(value):
        # JSON would send null where MessagePack sends NaN: clients would see different infos.
        raise ProtocolError(ErrorCode.AUTH_FAILED, "claim 'info' holds NaN or an infinity")
    return value


def _all_numbers_finite(value: object) -> bool:
    """Whether `value` (bounded in depth, as orjson encoded it) has no NaN or infinity."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_numbers_finite(item) for item in value.values())
    if isinstance(value, list):
        return all(_all_numbers_finite(item) for item in value)
    return True


def mint_token(
    secret: str,
    user: str,
    *,
    channels: Sequence[str] = (),
    publish: Sequence[str] = (),
    ttl_seconds: float = 3600.0,
    algorithm: str = "HS256",
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
    admin: bool = False,
    info: Mapping[str, Any] | None = None,
) -> str:
    """Sign a token for `user` (HS* secret or RS*/ES* private key in PEM)."""
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {
        "sub": user,
        "iat": int(issued),
        "exp": int(issued + ttl_seconds),
        "channels": list(channels),
        "publish": list(publish),
    }
    if admin:
        claims["admin"] = True
    if info is not None:
        claims["info"] = dict(info)
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm=algorithm)
