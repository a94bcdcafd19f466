"""One adapter manages streams: only `neurelay.jetstream` creates, changes or deletes one."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "neurelay"
STREAM_MANAGEMENT = {"add_stream", "update_stream", "delete_stream", "stream_info"}
# Messaging (the gateway's publish, follow and replay; the replicas' coordination over plain
# subjects; the backend Publisher) talks to NATS itself; nothing else does.
NATS_USERS = {
    "gateway/bus.py",
    "gateway/hub.py",
    "gateway/replaying.py",
    "gateway/coordinating.py",
    "publisher.py",
}


def _modules() -> dict[str, ast.Module]:
    return {
        str(path.relative_to(PACKAGE)): ast.parse(path.read_text(), str(path))
        for path in PACKAGE.rglob("*.py")
    }


def _is_nats(module: str | None) -> bool:
    return module is not None and (module == "nats" or module.startswith("nats."))


def _imports_nats(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(_is_nats(a.name) for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and not node.level and _is_nats(node.module):
            return True
    return False


def test_only_the_adapter_and_the_gateway_messaging_import_nats_py() -> None:
    importers = {name for name, tree in _modules().items() if _imports_nats(tree)}
    outside = importers - NATS_USERS
    assert outside, "the adapter itself imports nats-py"
    assert all(name.startswith("jetstream/") for name in outside), importers


def test_only_the_adapter_calls_jetstream_stream_management() -> None:
    callers = {
        name
        for name, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in STREAM_MANAGEMENT
    }
    assert callers == {"jetstream/syncing.py"}
