"""Election: which Channel governs a channel namespace of a gateway, decided purely.

Several Channels may claim the same (gateway, channel namespace); the oldest
claimant (by creation time, then name) governs it and the others are
reported as conflicts and ignored. A Channel being deleted keeps governing
until its finalizer lets go, so a younger claimant cannot take over a stream
that is still being released.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pydantic

from neurelay.operator.models import ChannelSpec

Body = Mapping[str, Any]


def age_key(item: Body) -> tuple[str, str]:
    """Sort key: older first (creation time), then by name for the same second."""
    return (str(item["metadata"].get("creationTimestamp", "")), str(item["metadata"]["name"]))


def served_channels(items: Iterable[Body], gateway: str) -> list[ChannelSpec]:
    """The winning valid, not deleting, Channel of each channel namespace of `gateway`."""
    winners: dict[str, tuple[tuple[str, str], ChannelSpec]] = {}
    for item in items:
        if item["metadata"].get("deletionTimestamp"):
            continue
        try:
            spec = ChannelSpec.model_validate(item.get("spec") or {})
        except pydantic.ValidationError:
            continue
        if spec.gateway != gateway:
            continue
        key = age_key(item)
        if spec.namespace not in winners or key < winners[spec.namespace][0]:
            winners[spec.namespace] = (key, spec)
    return [winners[ns][1] for ns in sorted(winners)]


def channel_owner(
    items: Iterable[Body], gateway: str, channel_namespace: str, *, include_deleting: bool
) -> str | None:
    """Name of the Channel that governs (gateway, channel namespace): the oldest claimant."""
    claimants = []
    for item in items:
        if item["metadata"].get("deletionTimestamp") and not include_deleting:
            continue
        spec = item.get("spec") or {}
        if spec.get("gateway") == gateway and spec.get("namespace") == channel_namespace:
            claimants.append(item)
    if not claimants:
        return None
    return str(min(claimants, key=age_key)["metadata"]["name"])
