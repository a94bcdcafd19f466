"""Hot reload: watch the configuration file and apply a changed one without a restart.

Kubernetes updates a mounted ConfigMap by swapping a symlink, which file
watchers miss, so the file's content is polled and compared. A file that
fails to validate is logged and counted and the running configuration stays;
a change to a section that needs a restart (`server`, `nats`) is logged and
waits for the next restart (the operator rolls the Deployment for those).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from neurelay.config import RESTART_SECTIONS, load_config
from neurelay.errors import BusError, ConfigError
from neurelay.gateway.runtime import Gateway


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


async def watch(gateway: Gateway, path: Path) -> None:
    """Poll `path` until cancelled, applying every valid change."""
    seen = _digest(path)
    while True:
        await asyncio.sleep(gateway.live.config.reload_interval_seconds)
        digest = _digest(path)
        if digest is None or digest == seen:
            continue
        seen = digest
        await apply(gateway, path)


async def apply(gateway: Gateway, path: Path) -> bool:
    log = gateway.log.getChild("reload")
    try:
        config = load_config(path)
        current = gateway.live.config
        pending = sorted(s for s in RESTART_SECTIONS if getattr(config, s) != getattr(current, s))
        if pending:
            log.warning("changes to %s apply after a restart", ", ".join(pending))
            config = config.model_copy(update={s: getattr(current, s) for s in pending})
        gateway.live.replace(config)
    except ConfigError as e:
        gateway.metrics.config_reloads.labels("invalid").inc()
        log.error("configuration not reloaded: %s", e)
        return False
    if config.nats.manage_streams and gateway.bus.connected:
        try:
            await gateway.bus.ensure_streams(config.namespaces)
        except BusError as e:
            log.warning("streams not updated after reload: %s", e)
    gateway.metrics.config_reloads.labels("applied").inc()
    log.info("configuration reloaded")
    return True
