"""The operator's logging: one format, and INFO that says only what changed or went wrong.

kopf logs every handler run at INFO ("Handler 'pause-watch' succeeded.",
"Timer 'drift-check' succeeded.", "Resuming is processed: ...") — a line
per event and per Channel per drift interval, hundreds a minute from an
idle operator. `RoutineFilter` keeps those lines for DEBUG only; failures,
retries and the operator's own lines about changes pass at any level. The
liveness probe's access log (aiohttp) is likewise DEBUG only.
"""

from __future__ import annotations

import logging
import re

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# kopf's own messages for a handler that ran without news, as kopf spells them.
_ROUTINE = re.compile(
    r"^(?:(?:Handler|Timer|Daemon|Indexer) '[^']*' succeeded\."
    r"|Resuming is processed: \d+ succeeded; 0 failed\.)$"
)


class RoutineFilter(logging.Filter):
    """Drops kopf's per-event success lines unless the logger is at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or not isinstance(record.msg, str):
            return True
        if not _ROUTINE.match(record.msg):
            return True
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def configure_logging(level: str) -> None:
    """Log to stderr at `level` (DEBUG, INFO or WARNING), kopf's routine lines at DEBUG only."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    # Request and response bodies only at DEBUG.
    logging.getLogger("kubernetes_asyncio").setLevel(max(logging.INFO, logging.getLevelName(level)))
    routine = RoutineFilter()
    for name in ("kopf.objects", "kopf.activities", "kopf"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RoutineFilter) for f in logger.filters):
            logger.addFilter(routine)
    if level != "DEBUG":
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
