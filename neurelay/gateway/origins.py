"""Origins: whether a browser's `Origin` may open a WebSocket, decided on parsed origins.

An origin is a scheme, a host and a port (RFC 6454). Each `allowed_origins`
pattern is an origin whose host may be `*` (any host) or start with `*.`
(any subdomain, one label deep or more), and whose port may be `*` (any
port); the pattern `*` alone allows every origin. An origin matches a
pattern when scheme and port are equal (a missing port is the scheme's
default) and the host matches. Text that is not
a bare serialized origin (with a path, user info, a query, a scheme other
than http and https, a malformed host or port) matches nothing. So
`https://*.example.com` allows `https://app.example.com`, and not
`https://evil.com/.example.com`, `https://example.com.evil` or
`http://app.example.com`. Comparing parsed parts rather than globbing the
text is the point: a glob's `*` also matches `/` and `@`.
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")
_IPV6 = re.compile(r"[0-9a-f:.]+")


@dataclasses.dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int | None  # None: any port (patterns only)


def parse_origin(text: str, *, pattern: bool = False) -> Origin | None:
    """The origin `text` serializes, or None; with `pattern`, host and port may be wildcards."""
    any_port = pattern and text.endswith(":*")
    try:
        parts = urlsplit(text[:-2] if any_port else text)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or parts.path or parts.query or parts.fragment:
        return None
    if "@" in parts.netloc or not parts.hostname:
        return None
    host = parts.hostname  # lower-cased, IPv6 brackets removed
    name = host[2:] if pattern and host.startswith("*.") else host
    if not (pattern and host == "*") and not (_HOST.fullmatch(name) or _IPV6.fullmatch(name)):
        return None
    if any_port:
        return Origin(scheme, host, None)
    return Origin(scheme, host, port if port is not None else DEFAULT_PORTS[scheme])


def allowed(origin: str, patterns: list[str]) -> bool:
    """Whether the `Origin` header value `origin` is allowed by one of `patterns`."""
    if "*" in patterns:
        return True
    parsed = parse_origin(origin)
    if parsed is None:
        return False
    for text in patterns:
        pattern = parse_origin(text, pattern=True)
        if pattern is not None and _matches(parsed, pattern):
            return True
    return False


def _matches(origin: Origin, pattern: Origin) -> bool:
    if origin.scheme != pattern.scheme or pattern.port not in (None, origin.port):
        return False
    if pattern.host == "*":
        return True
    if pattern.host.startswith("*."):
        return origin.host.endswith(pattern.host[1:])
    return origin.host == pattern.host
