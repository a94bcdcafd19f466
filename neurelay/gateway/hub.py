"""Hub: channel → local subscribers, and the fan-out hot path.

Per channel with local subscribers the hub holds one `Feed`: one core NATS
subscription on the channel's live subject, whatever the number of local
followers. Each message is decoded once and added to the channel's
`Broadcast` of the current event-loop pass; at the end of the pass the
broadcast goes to every follower without awaiting anything, as the same
bytes to those up to date (`neurelay/gateway/broadcasting.py`).

Ordering and exactly-once rest on JetStream sequences. A feed remembers the
last sequence it delivered; the republished header `Nats-Last-Sequence`
names the channel's previous message, so a live message that does not
follow on reveals a gap (lost while NATS was unreachable), which the hub
fills from the stream before going on. A new follower that asks for history
buffers live messages while its history is read, then drops whatever the
history already gave it, so it sees every message once, in order.

Join/leave notices arrive on the same live subject, marked by a header; the
hub turns them into `join`/`leave` frames for the channel's followers (not
for the connection that joined) when the namespace has join/leave on, and
keeps a `Roster` of the members announced so that the connections of a dead
replica can be sent off with `leave` (`replica_gone`). Notices share the
feeds, their subscription and their followers with messages, which is why
they are handled here rather than in a module of their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from nats.aio.msg import Msg

from neurelay.backoff import Backoff
from neurelay.errors import BusError
from neurelay.gateway.broadcasting import Broadcast, Follower
from neurelay.gateway.bus import Bus, Listening
from neurelay.gateway.envelopes import message_frame
from neurelay.gateway.observability import Metrics
from neurelay.gateway.outbox import Outbox
from neurelay.gateway.presence import EVENT_HEADER, Member, Roster, decode_events
from neurelay.gateway.replaying import History
from neurelay.gateway.settings import LiveSettings
from neurelay.protocol import frames
from neurelay.protocol.channels import Channel
from neurelay.protocol.frames import FrameId

# A gap repair waits for JetStream to answer again: retry soon, never slower than 5 s.
_REPAIR_BACKOFF = Backoff(initial_seconds=0.2, max_seconds=5.0)


class Feed:
    """A channel followed by this gateway: its NATS subscription and local followers."""

    __slots__ = (
        "broadcast",
        "channel",
        "followers",
        "keeps_history",
        "last_seq",
        "lock",
        "seeded",
        "subscription",
    )

    def __init__(self, channel: Channel, keeps_history: bool) -> None:
        self.channel = channel
        self.keeps_history = keeps_history
        self.followers: dict[Outbox, Follower] = {}
        self.subscription: Listening | None = None
        self.last_seq = 0
        self.lock = asyncio.Lock()
        self.seeded = False
        self.broadcast: Broadcast | None = None  # what this pass of the event loop brought


class Hub:
    def __init__(
        self, bus: Bus, live: LiveSettings, metrics: Metrics, logger: logging.Logger
    ) -> None:
        self._bus = bus
        self._live = live
        self._metrics = metrics
        self._log = logger
        self._feeds: dict[str, Feed] = {}
        self._opening: dict[str, asyncio.Future[Feed]] = {}
        self._repairs: dict[str, asyncio.Task[None]] = {}
        self._broadcasting: list[Feed] = []  # feeds with a broadcast to send this pass
        self.roster = Roster()

    # -- following ---------------------------------------------------------------------------

    async def follow(
        self,
        outbox: Outbox,
        channel: Channel,
        since: int | None,
        last: int | None,
        frame_id: FrameId | None,
        connection: str = "",
    ) -> None:
        """Add a follower: queue `subscribed`, then history, then live messages, in order."""
        feed = await self._feed(channel)
        follower = Follower(outbox, connection)
        feed.followers[outbox] = follower
        try:
            if feed.keeps_history:
                history = await self._history(channel, since, last)
            else:
                history = History([], recovered=since is None and last is None, last_seq=0)
        except BaseException:
            if feed.followers.get(outbox) is follower:
                await self._remove(feed, outbox)
            raise
        if feed.followers.get(outbox) is not follower:
            return  # unsubscribed or resubscribed meanwhile
        outbox.send(frames.subscribed(channel.name, history.last_seq, history.recovered, frame_id))
        for stored in history.messages:
            frame = message_frame(channel, stored.seq, stored.data)
            if frame is not None:
                outbox.send(frame)
            follower.last_seq = stored.seq
        # Whatever the client already has (`since`) or did not ask for (before a plain
        # subscription) must not come again from the live backlog. A `since` beyond the
        # channel's newest message (the stream was re-created and counts again from 1) is
        # no floor: every later message is new to the client.
        if since is not None and since <= history.last_seq:
            follower.last_seq = max(follower.last_seq, since)
        if since is None and last is None:
            follower.last_seq = max(follower.last_seq, history.last_seq)
        backlog, follower.backlog = follower.backlog or [], None
        for seq, frame in backlog:
            if seq == 0 or seq > follower.last_seq:
                outbox.send(frame)
                follower.last_seq = max(follower.last_seq, seq)

    async def _history(self, channel: Channel, since: int | None, last: int | None) -> History:
        namespace = self._live.config.namespaces.get(channel.namespace)
        depth = namespace.history_messages if namespace else 0
        if since is None and last is None:
            return History([], recovered=True, last_seq=await self._bus.last_seq(channel))
        history = await self._bus.history(
            channel, since, last, max(depth, 1), self._live.config.limits.replay_budget
        )
        self._metrics.history_messages_read.inc(history.read)
        return history

    async def unfollow(self, outbox: Outbox, channel: Channel) -> None:
        feed = self._feeds.get(channel.name)
        if feed is not None and outbox in feed.followers:
            await self._remove(feed, outbox)

    async def drop(self, outbox: Outbox, channels: list[Channel]) -> None:
        """Forget a closed connection."""
        for channel in channels:
            await self.unfollow(outbox, channel)

    async def _feed(self, channel: Channel) -> Feed:
        while True:
            feed = self._feeds.get(channel.name)
            if feed is not None:
                return feed
            pending = self._opening.get(channel.name)
            if pending is None:
                return await self._open_once(channel)
            feed = await asyncio.shield(pending)
            if self._feeds.get(channel.name) is feed:
                return feed
            # Opened and closed again while we waited: look again.

    async def _open_once(self, channel: Channel) -> Feed:
        future: asyncio.Future[Feed] = asyncio.get_running_loop().create_future()
        self._opening[channel.name] = future
        try:
            feed = await self._open(channel)
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: the waiters, if any, re-raise it
            raise
        else:
            future.set_result(feed)
            return feed
        finally:
            del self._opening[channel.name]

    async def _open(self, channel: Channel) -> Feed:
        namespace = self._live.config.namespaces.get(channel.namespace)
        feed = Feed(channel, keeps_history=bool(namespace and namespace.keeps_history))

        async def on_message(msg: Msg) -> None:
            await self._on_live(feed, msg)

        # Held until the feed knows where the channel stands, so a live message arriving
        # meanwhile is judged against the right sequence instead of looking like a gap.
        async with feed.lock:
            feed.subscription = await self._bus.follow(channel, on_message)
            if feed.keeps_history:
                try:
                    feed.last_seq = await self._bus.last_seq(channel)
                except BaseException:
                    await self._bus.unfollow(feed.subscription)
                    raise
        self._feeds[channel.name] = feed
        self.roster.follow(channel.name)
        self._metrics.channels.set(len(self._feeds))
        return feed

    async def _remove(self, feed: Feed, outbox: Outbox) -> None:
        del feed.followers[outbox]
        if feed.followers or self._feeds.get(feed.channel.name) is not feed:
            return
        del self._feeds[feed.channel.name]
        self.roster.forget(feed.channel.name)
        self._metrics.channels.set(len(self._feeds))
        if feed.subscription is not None:
            await self._bus.unfollow(feed.subscription)

    # -- delivery (hot path) -----------------------------------------------------------------

    async def _on_live(self, feed: Feed, msg: Msg) -> None:
        headers = msg.headers
        if headers and EVENT_HEADER in headers:
            self._on_event(feed, msg.data)
            return
        if not headers or "Nats-Sequence" not in headers:
            self._deliver(feed, 0, msg.data)
            return
        seq = int(headers["Nats-Sequence"])
        previous = int(headers.get("Nats-Last-Sequence", "0"))
        async with feed.lock:
            if previous > feed.last_seq and not await self._repair(feed, until=seq):
                # Never step over a gap: this message stays in the stream and the retry
                # delivers it after the ones before it.
                self._retry_repair(feed)
                return
            if seq > feed.last_seq:
                feed.last_seq = seq
                self._deliver(feed, seq, msg.data)

    async def _repair(self, feed: Feed, until: int | None) -> bool:
        """Deliver what the stream holds after `feed.last_seq` (and before `until`)."""
        try:
            history = await self._bus.history(
                feed.channel,
                feed.last_seq,
                None,
                self._history_limit(feed.channel),
                self._live.config.limits.replay_budget,
            )
        except BusError as e:
            self._log.warning("gap on %s not repaired yet: %s", feed.channel.name, e)
            return False
        self._metrics.history_messages_read.inc(history.read)
        for stored in history.messages:
            if until is not None and stored.seq >= until:
                break
            if stored.seq > feed.last_seq:
                feed.last_seq = stored.seq
                self._metrics.gaps_repaired.inc()
                self._deliver(feed, stored.seq, stored.data)
        return True

    def _retry_repair(self, feed: Feed) -> None:
        if feed.channel.name not in self._repairs:
            self._repairs[feed.channel.name] = asyncio.create_task(
                self._repair_until_done(feed), name=f"neurelay-repair-{feed.channel.name}"
            )

    async def _repair_until_done(self, feed: Feed) -> None:
        attempt = 0
        try:
            while self._feeds.get(feed.channel.name) is feed:
                await asyncio.sleep(_REPAIR_BACKOFF.delay(attempt))
                attempt += 1
                async with feed.lock:
                    if await self._repair(feed, until=None):
                        return
        finally:
            self._repairs.pop(feed.channel.name, None)

    async def close(self) -> None:
        """Stop pending repairs (the gateway is stopping)."""
        for task in list(self._repairs.values()):
            task.cancel()
        await asyncio.gather(*self._repairs.values(), return_exceptions=True)

    def _history_limit(self, channel: Channel) -> int:
        namespace = self._live.config.namespaces.get(channel.namespace)
        return max(namespace.history_messages if namespace else 0, 1)

    async def repair_all(self) -> None:
        """After a NATS reconnect: deliver whatever was stored while we were away."""
        for feed in list(self._feeds.values()):
            if feed.keeps_history:
                async with feed.lock:
                    if not await self._repair(feed, until=None):
                        self._retry_repair(feed)

    def _deliver(self, feed: Feed, seq: int, data: bytes) -> None:
        frame = message_frame(feed.channel, seq, data)
        if frame is None:
            self._log.warning("dropped a malformed message on %s", feed.channel.name)
            return
        self._broadcast(feed).add_message(seq, frame)

    def _broadcast(self, feed: Feed) -> Broadcast:
        """The feed's broadcast of this pass, sent when the pass ends."""
        broadcast = feed.broadcast
        if broadcast is None:
            broadcast = feed.broadcast = Broadcast()
            if not self._broadcasting:
                asyncio.get_running_loop().call_soon(self._send_broadcasts)
            self._broadcasting.append(feed)
        return broadcast

    def _send_broadcasts(self) -> None:
        feeds, self._broadcasting = self._broadcasting, []
        queue_frames = self._live.config.limits.send_queue_frames
        for i, feed in enumerate(feeds):
            try:
                self._send_broadcast(feed, queue_frames)
            except BaseException:
                # The channels after a failing one still go out (on the next pass): left
                # with a broadcast that nobody schedules, they would never deliver again.
                rest = [later for later in feeds[i + 1 :] if later.broadcast is not None]
                if rest:
                    if not self._broadcasting:
                        asyncio.get_running_loop().call_soon(self._send_broadcasts)
                    self._broadcasting[:0] = rest
                raise

    def _send_broadcast(self, feed: Feed, queue_frames: int) -> None:
        broadcast, feed.broadcast = feed.broadcast, None
        if broadcast is None:
            return
        started = time.perf_counter()
        if broadcast.drop_unencodable():
            self._log.warning("dropped an unencodable message on %s", feed.channel.name)
        delivered = broadcast.send(list(feed.followers.values()), queue_frames)
        if delivered:
            self._metrics.messages_out.labels(feed.channel.namespace).inc(delivered)
        if broadcast.messages:
            self._metrics.fanout_seconds.observe(time.perf_counter() - started)

    # -- join/leave --------------------------------------------------------------------------

    def _on_event(self, feed: Feed, data: bytes) -> None:
        try:
            events = decode_events(data)
        except ValueError as e:
            self._log.warning("dropped a malformed notice on %s: %s", feed.channel.name, e)
            return
        name = feed.channel.name
        for kind, member in events:
            if kind == "join":
                self.roster.joined(name, member)
                self._tell(feed, frames.join(name, member.entry()), member.connection)
            else:
                self.roster.left(name, member.connection)
                self._tell(feed, frames.leave(name, member.entry()), member.connection)

    def asking(self, channel: Channel) -> set[str]:
        """This replica asks the others who they hold in `channel`; `seed` takes the answer."""
        return self.roster.asking(channel.name)

    def seed(
        self, channel: Channel, question: set[str], members: list[Member], *, announce: bool = False
    ) -> None:
        """Members other replicas hold in `channel`, learnt by asking them (`asking`).

        With `announce`, those this replica did not know get a `join`: they are back after
        their replica was taken for dead (and their `leave` sent).
        """
        added = self.roster.answered(channel.name, question, members)
        feed = self._feeds.get(channel.name)
        if feed is None or not announce:
            return
        for member in added:
            self._tell(feed, frames.join(channel.name, member.entry()), member.connection)

    def needs_seed(self, channel: Channel) -> bool:
        """True once per feed: its roster must learn the members other replicas already had."""
        feed = self._feeds.get(channel.name)
        if feed is None or feed.seeded:
            return False
        feed.seeded = True
        return True

    def followed(self) -> list[Channel]:
        return [feed.channel for feed in self._feeds.values()]

    def replica_gone(self, replica: str) -> int:
        """Send `leave` for every member `replica` held; returns how many left."""
        gone = self.roster.drop_replica(replica)
        for name, member in gone:
            feed = self._feeds.get(name)
            if feed is not None:
                self._tell(feed, frames.leave(name, member.entry()), member.connection)
        return len(gone)

    def _joins(self, feed: Feed) -> bool:
        namespace = self._live.config.namespaces.get(feed.channel.namespace)
        return namespace is not None and namespace.join_leave

    def _tell(self, feed: Feed, frame: dict[str, Any], about: str) -> None:
        """Send a join/leave frame to every live follower but the connection it is about."""
        if self._joins(feed):
            self._broadcast(feed).add_notice(frame, about)
