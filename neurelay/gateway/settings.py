"""LiveSettings: the configuration a running gateway uses now, swapped whole on reload.

Sessions, the hub and the HTTP handlers read `live.config` and
`live.verifier` at the moment they need them, so a reloaded configuration
(new limits, namespaces, origins or signing key) applies to every existing
connection without a restart. `verify` is the one way a token is accepted:
the verifier's checks, then the revocations (kept across reloads).
"""

from __future__ import annotations

import time

from neurelay.auth import Principal, Revocations, TokenVerifier
from neurelay.config import GatewayConfig


class LiveSettings:
    __slots__ = ("config", "revocations", "verifier")

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.verifier = TokenVerifier(config.auth)
        self.revocations = Revocations()

    def replace(self, config: GatewayConfig) -> None:
        """Apply a new configuration; raises ConfigError (keeping the old one) if unusable."""
        verifier = TokenVerifier(config.auth)
        self.config, self.verifier = config, verifier

    def verify(self, token: str, now: float | None = None) -> Principal:
        """The token's principal; ProtocolError if invalid, expired or revoked."""
        principal = self.verifier.verify(token)
        return self.revocations.check(principal, time.time() if now is None else now)
