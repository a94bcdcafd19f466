"""Election: which Channel governs a channel namespace of a gateway, decided purely.

Several Channels may claim the same (gateway, channel namespace); the oldest
claimant (by creation time, then name) governs it and the others are
reported as conflicts and ignored. A Channel being deleted keeps governing
until its finalizer lets go, so a younger claimant cannot take over a stream
that is still being released. The claimants come from the operator's
`directory`, already narrowed to one gateway (or one channel namespace).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from neurelay.operator.models import ChannelSpec


class Claimant(Protocol):
    """A Channel as the election sees it."""

    @property
    def name(self) -> str: ...

    @property
    def deleting(self) -> bool: ...

    @property
    def spec(self) -> ChannelSpec: ...

    @property
    def age_key(self) -> tuple[str, str]:
        """Older first (creation time), then by name for the same second."""
        ...


def channel_owner(claimants: Iterable[Claimant], *, include_deleting: bool) -> str | None:
    """Name of the Channel governing its namespace: the oldest of the claimants."""
    eligible = [c for c in claimants if include_deleting or not c.deleting]
    if not eligible:
        return None
    return min(eligible, key=lambda claimant: claimant.age_key).name


def served_channels(claimants: Iterable[Claimant]) -> list[ChannelSpec]:
    """The winning, not deleting, Channel of each channel namespace, by namespace."""
    winners: dict[str, Claimant] = {}
    for claimant in sorted(claimants, key=lambda claimant: claimant.age_key):
        if not claimant.deleting:
            winners.setdefault(claimant.spec.namespace, claimant)
    return [winners[namespace].spec for namespace in sorted(winners)]
