"""Status conditions (Ready, Progressing, Degraded) as plain dictionaries, computed purely.

`set_condition` keeps `lastTransitionTime` when the status does not flip,
so recomputing the same conditions yields the same status and the operator
writes status only when something really changed (`status_changed`).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Literal

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"

Status = Literal["True", "False", "Unknown"]
ConditionDict = dict[str, Any]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: bool | Status,
    reason: str,
    message: str = "",
    *,
    generation: int | None = None,
    timestamp: str | None = None,
) -> list[ConditionDict]:
    """A new list with condition `type_` set; other types are kept in order."""
    value: Status = status if isinstance(status, str) else ("True" if status else "False")
    previous = find(conditions, type_)
    transition = (
        previous["lastTransitionTime"]
        if previous is not None and previous.get("status") == value
        else (timestamp or now())
    )
    condition: ConditionDict = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message[:4096],
        "lastTransitionTime": transition,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    result = [dict(c) for c in conditions if c.get("type") != type_]
    index = next((i for i, c in enumerate(conditions) if c.get("type") == type_), len(result))
    result.insert(index, condition)
    return result


def find(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: Sequence[Mapping[str, Any]], type_: str) -> bool:
    condition = find(conditions, type_)
    return condition is not None and condition.get("status") == "True"


def status_changed(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether writing `desired` (a partial status) would change `current`."""
    return any(current.get(key) != value for key, value in desired.items())
