"""The import graph of the `neurelay` package: no cycles, and transports reach the core
only through `Gateway`.

The graph is read from the source with `ast`, counting every import a module
makes (including those under `TYPE_CHECKING` and inside functions), so a
cycle hidden from the interpreter by a late import is still a cycle here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "neurelay"
# The gateway's transports: what faces clients. They call `Gateway` (runtime) and the
# HTTP plumbing (web), never the NATS side of the core directly.
TRANSPORTS = ("app", "connection", "console", "http_api", "web")
CORE_BEHIND_GATEWAY = ("admission", "bus", "hub", "replaying", "envelopes")


def _module_name(package: Path, path: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module name → the package's modules it imports."""
    files = {_module_name(package, p): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    anchor = anchor if is_package else anchor[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import module` imports the module; `from module import name` the module.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                    for alias in node.names
                ]
            else:
                continue
            edges.update(t for t in targets if t in files and t != name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_neurelay_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle_through_a_type_checking_import(tmp_path):
    package = tmp_path / "neurelay"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from neurelay.b import B\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from neurelay import a\n"
    )
    (package / "c.py").write_text("from . import a\n")
    assert cycles(import_graph(package)) == [["neurelay.a", "neurelay.b"]]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_gateway_transport_reaches_the_core_only_through_gateway(transport):
    imported = import_graph()[f"neurelay.gateway.{transport}"]
    behind = {f"neurelay.gateway.{m}" for m in CORE_BEHIND_GATEWAY}
    assert imported & behind == set()


def test_the_runtime_does_not_import_a_transport():
    imported = import_graph()["neurelay.gateway.runtime"]
    assert imported & {f"neurelay.gateway.{m}" for m in TRANSPORTS} == set()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_gateway_transport_never_touches_what_lies_behind_gateway(transport):
    """Not `gateway.bus`, `gateway.hub` or `gateway.registry`: only `Gateway`'s methods."""
    path = PACKAGE / "gateway" / f"{transport}.py"
    reached = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in {"bus", "hub", "registry"}:
            owner = node.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if "gateway" in name.lower():
                reached.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert reached == []
