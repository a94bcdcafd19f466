"""The exception tree drawn in neurelay/errors.py is the real one, and it holds every class."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import neurelay
from neurelay import errors
from neurelay.errors import NeurelayError

_NODE = re.compile(r"^ {4}((?:│   |    )*)(?:├── |└── )?([A-Z]\w+)")


def _drawn_tree() -> dict[str, str | None]:
    """Each class named in the docstring's drawing → the class drawn as its parent."""
    doc = errors.__doc__ or ""
    drawing = doc.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in drawing.splitlines():
        match = _NODE.match(line)
        assert match, f"not a line of the tree: {line!r}"
        depth = len(match.group(1)) // 4 + (1 if "──" in line else 0)
        del stack[depth:]
        parents[match.group(2)] = stack[-1] if stack else None
        stack.append(match.group(2))
    return parents


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module_info in pkgutil.walk_packages(neurelay.__path__, "neurelay."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
            ):
                found[name] = value
    return found


def test_every_exception_class_of_the_package_is_a_neurelay_error() -> None:
    outside = [
        name for name, cls in _exception_classes().items() if not issubclass(cls, NeurelayError)
    ]
    assert outside == []


def test_the_drawn_tree_names_every_exception_class_and_its_real_parent() -> None:
    classes = _exception_classes()
    drawn = _drawn_tree()
    assert sorted(drawn) == sorted(classes)
    for name, parent in drawn.items():
        bases = classes[name].__bases__
        assert bases == ((classes[parent],) if parent else (Exception,)), name
