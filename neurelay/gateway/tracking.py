"""Tracking: who is subscribed where, across replicas, and the server API's acts on users.

`Tracker` joins the pure presence model to the hub and the coordinator:
a subscription enters `LocalPresence` and, in namespaces with join/leave,
is announced; an unsubscription or a closed connection leaves the same way.
Queries (`presence`, `stats`, `channels`) ask every replica and merge the
answers. Commands (`disconnect`, `revoke`, `unsubscribe`) are sent to every
replica, each of which applies them to its own connections through the
`Targets` it was given, and the counts are summed. Bus errors surface as
`BusError`; the gateway maps them to protocol errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol

from neurelay.auth import Principal
from neurelay.errors import BusError
from neurelay.gateway import gathering
from neurelay.gateway.bus import Bus
from neurelay.gateway.coordinating import Coordinator
from neurelay.gateway.hub import Hub
from neurelay.gateway.presence import Listing, Member
from neurelay.gateway.session import Action, Session
from neurelay.gateway.settings import LiveSettings
from neurelay.protocol.channels import Channel, parse_channel


class Target(Protocol):
    """A connection the server API can act on."""

    session: Session

    async def act(self, actions: list[Action]) -> None: ...


class Tracker:
    def __init__(
        self,
        bus: Bus,
        hub: Hub,
        live: LiveSettings,
        replica: str,
        targets: Callable[[], Iterable[Target]],
        logger: logging.Logger,
    ) -> None:
        self._hub = hub
        self._live = live
        self._targets = targets
        self._log = logger
        self._seeding: set[asyncio.Task[None]] = set()
        self.coordinator = Coordinator(
            bus,
            live,
            replica,
            logger,
            on_command=self._command,
            on_replica_gone=self._replica_gone,
            on_replica_back=self._replica_back,
        )

    async def stop(self) -> None:
        for task in list(self._seeding):
            task.cancel()
        await asyncio.gather(*self._seeding, return_exceptions=True)
        await self.coordinator.stop()

    # -- this replica's subscriptions --------------------------------------------------------

    def member(self, connection: str, principal: Principal) -> Member:
        return Member(principal.user, connection, self.coordinator.replica, principal.info)

    async def subscribed(self, channel: Channel, member: Member) -> None:
        new = self.coordinator.local.add(channel.name, member)
        if not self._join_leave(channel):
            return
        if self._hub.needs_seed(channel):
            self._spawn(self._seed(channel))
        if new:
            self.coordinator.announce("join", channel, member)

    async def unsubscribed(self, channel: Channel, connection: str) -> None:
        member = self.coordinator.local.remove(channel.name, connection)
        if member is not None and self._join_leave(channel):
            self.coordinator.announce("leave", channel, member)

    async def disconnected(self, connection: str) -> None:
        for name, member in self.coordinator.local.remove_connection(connection):
            channel = parse_channel(name)
            if self._join_leave(channel):
                self.coordinator.announce("leave", channel, member)

    def _join_leave(self, channel: Channel) -> bool:
        namespace = self._live.config.namespaces.get(channel.namespace)
        return namespace is not None and namespace.join_leave

    # -- queries -----------------------------------------------------------------------------

    async def presence(self, channel: Channel, binary: bool) -> Listing:
        """Who is in `channel`, entries encoded in MessagePack (`binary`) or JSON."""
        cap = self._live.config.presence.max_clients
        answers = await self.coordinator.ask_for_bytes(
            {"q": "presence", "channel": channel.name, "limit": cap, "binary": binary}
        )
        return Listing.merge(answers, cap)

    async def stats(self, channel: Channel) -> tuple[int, int]:
        answers = await self.coordinator.ask({"q": "stats", "channel": channel.name})
        return gathering.merge_stats(answers)

    async def channels(self, namespace: str | None) -> list[dict[str, Any]]:
        answers = await self.coordinator.ask({"q": "channels", "namespace": namespace})
        return gathering.merge_channels(answers)

    # -- commands ----------------------------------------------------------------------------

    async def disconnect(self, user: str) -> int:
        return await self._everywhere({"cmd": "disconnect", "user": user})

    async def revoke(self, user: str, issued_before_ms: int) -> int:
        before = await self.coordinator.revoke(user, issued_before_ms)
        return await self._everywhere({"cmd": "revoke", "user": user, "before": before})

    async def unsubscribe(self, user: str, channel: Channel) -> int:
        return await self._everywhere({"cmd": "unsubscribe", "user": user, "channel": channel.name})

    async def _everywhere(self, command: dict[str, Any]) -> int:
        return gathering.merge_counts(await self.coordinator.ask(command), "connections")

    async def _command(self, command: dict[str, Any]) -> int:
        """Apply a command to this replica's connections; returns how many it acted on."""
        kind, user = command.get("cmd"), command.get("user")
        if not isinstance(user, str):
            raise ValueError("a command needs a string 'user'")
        plan: Callable[[Session], list[Action]]
        if kind == "disconnect":
            plan = Session.disconnected_by_server
        elif kind == "revoke":
            before = command.get("before")
            if not isinstance(before, int):
                raise ValueError("revoke needs an integer 'before'")
            self._live.revocations.revoke(
                user, before, before / 1000 + self._live.config.auth.max_token_lifetime_seconds
            )
            plan = lambda session: session.revoked_before(before)  # noqa: E731
        elif kind == "unsubscribe":
            channel = parse_channel(command.get("channel"))
            plan = lambda session: session.unsubscribed_by_server(channel)  # noqa: E731
        else:
            raise ValueError(f"unknown command {str(kind)[:32]!r}")
        acted = 0
        for target in list(self._targets()):
            principal = target.session.principal
            if principal is None or principal.user != user:
                continue
            actions = plan(target.session)
            if actions:
                acted += 1
                await target.act(actions)
        return acted

    # -- replicas coming and going -----------------------------------------------------------

    async def _replica_gone(self, replica: str) -> None:
        self._hub.replica_gone(replica)

    async def _replica_back(self, replica: str) -> None:
        for channel in self._hub.followed():
            if self._join_leave(channel):
                self._spawn(self._seed(channel, announce=True))

    async def _seed(self, channel: Channel, *, announce: bool = False) -> None:
        """Learn who other replicas hold in `channel`, so their death can be announced."""
        question = self._hub.asking(channel)
        members: list[Member] = []
        try:
            answers = await self.coordinator.ask({"q": "members", "channel": channel.name})
            for answer in answers:
                for wire in answer.get("members", ()):
                    with contextlib.suppress(ValueError):
                        members.append(Member.from_wire(wire))
        except BusError as e:
            self._log.warning("members of %s unknown: %s", channel.name, e)
        finally:
            # Also when unanswered or cancelled: the question is closed either way.
            self._hub.seed(channel, question, members, announce=announce)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name="neurelay-presence-seed")
        self._seeding.add(task)
        task.add_done_callback(self._seeding.discard)
