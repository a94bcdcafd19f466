"""Metrics and structured logs of a gateway process.

`Metrics` owns its own Prometheus registry (no process globals, so several
gateways can run in one test process); `/metrics` exposes it. `JsonFormatter`
writes one JSON object per log line, carrying the connection id and frame id
as correlation ids when the record has them; `configure_logging` sends every
library's records through it too, and shortens aiohttp's report of a
malformed request to one line without the request's bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_FANOUT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("neurelay_connections", "Open WebSocket connections.", registry=r)
        self.channels = Gauge(
            "neurelay_channels", "Channels with at least one local subscriber.", registry=r
        )
        self.messages_in = Counter(
            "neurelay_messages_in",
            "Messages published through this gateway.",
            ["namespace"],
            registry=r,
        )
        self.messages_out = Counter(
            "neurelay_messages_out",
            "Messages queued to local subscribers.",
            ["namespace"],
            registry=r,
        )
        self.fanout_seconds = Histogram(
            "neurelay_fanout_seconds",
            "Time to send one channel's messages of one event-loop pass to every local subscriber.",
            buckets=_FANOUT_BUCKETS,
            registry=r,
        )
        self.rejections = Counter(
            "neurelay_rejections",
            "Frames and requests refused, by error code.",
            ["code"],
            registry=r,
        )
        self.nats_reconnects = Counter(
            "neurelay_nats_reconnects", "Reconnections to NATS.", registry=r
        )
        self.gaps_repaired = Counter(
            "neurelay_gaps_repaired",
            "Messages recovered from JetStream after a live gap.",
            registry=r,
        )
        self.history_messages_read = Counter(
            "neurelay_history_messages_read",
            "Messages read from JetStream for resume, `last` and gap repair.",
            registry=r,
        )
        self.connections_pending = Gauge(
            "neurelay_connections_pending",
            "Connections that have not sent a complete request yet (or idle between requests).",
            registry=r,
        )
        self.connections_cut = Counter(
            "neurelay_connections_cut",
            "Connections closed before completing a request, by reason (deadline, "
            "pending_limit, file_limit).",
            ["reason"],
            registry=r,
        )
        self.tasks = Gauge("neurelay_tasks", "asyncio tasks of the gateway process.", registry=r)
        self.tasks.set_function(_task_count)
        self.slow_consumers = Counter(
            "neurelay_slow_consumers",
            "Connections closed with 4005 because their send queue overflowed.",
            registry=r,
        )
        self.upgrades_abandoned = Counter(
            "neurelay_upgrades_abandoned",
            "WebSocket upgrades the client dropped before they completed.",
            registry=r,
        )
        self.streams_refused = Gauge(
            "neurelay_streams_refused",
            "Streams JetStream will not bring to the configuration (refused, or a field "
            "that cannot change in place); /readyz names them.",
            registry=r,
        )
        self.config_reloads = Counter(
            "neurelay_config_reloads", "Configuration reloads, by result.", ["result"], registry=r
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _task_count() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # exposed outside the event loop (no running loop in this thread)
        return 0


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra` fields."""

    _STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str) -> None:
    """JSON lines on stderr: Neurelay's loggers at `level`, every other library's at WARNING."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_without_request_bytes)
    ours = logging.getLogger("neurelay")
    ours.handlers[:] = [handler]
    ours.setLevel(level)
    ours.propagate = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


def _without_request_bytes(record: logging.LogRecord) -> bool:
    """aiohttp logs a malformed request with a traceback and the offending bytes, which may
    hold a token: keep one line saying what was refused, and nothing of the request."""
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, HttpProcessingError):
        if record.args and isinstance(record.args, tuple):
            record.remote = record.args[0]
        record.msg = "refused a malformed HTTP request"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        record.status = error.code
        record.error = type(error).__name__
        record.levelno, record.levelname = logging.INFO, "INFO"
    return True
