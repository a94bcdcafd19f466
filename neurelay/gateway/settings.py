"""LiveSettings: the configuration a running gateway uses now, swapped whole on reload.

Sessions, the hub and the HTTP handlers read `live.config` and
`live.verifier` at the moment they need them, so a reloaded configuration
(new limits, namespaces, origins or signing key) applies to every existing
connection without a restart.
"""

from __future__ import annotations

from neurelay.auth import TokenVerifier
from neurelay.config import GatewayConfig


class LiveSettings:
    __slots__ = ("config", "verifier")

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.verifier = TokenVerifier(config.auth)

    def replace(self, config: GatewayConfig) -> None:
        """Apply a new configuration; raises ConfigError (keeping the old one) if unusable."""
        verifier = TokenVerifier(config.auth)
        self.config, self.verifier = config, verifier
