"""Fan-out and delivery: how events reach connections.

One event is built once and handed to every recipient's ``IChatClient.deliver``; room
messages said while connections' input is being read wait for the end of the reactor turn
and go out as one :class:`MessageBatch` per room, one write per member.  So do the joins,
parts and quits in a room of ``MEMBERSHIP_BATCH_FROM`` members or more, whenever the turn's
end will flush them (a user hears of its own at once): a thousand users joining or leaving
a big room together cost each member a few writes, not a thousand.  Nothing here does
work per recipient beyond the ``deliver`` call: the per-protocol counters of a room fan-out
come from the room's cached counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from chatserver.core.events import (
    Event,
    Message,
    MessageBatch,
    MessageRun,
    renders_shared,
    shared_renderings,
)
from chatserver.core.interfaces import IChatClient

if TYPE_CHECKING:
    from chatserver.core.rooms import Room
    from chatserver.core.users import User

# Rooms at least this big hear of joins and parts with the turn's batch.  In a small room a
# join costs a handful of deliveries either way, and comes at once.
MEMBERSHIP_BATCH_FROM = 50

# How another cluster node's user's room messages reached this node's members (see
# ``Delivery.run_paths``): as the lines their node rendered and shipped, as lines rendered
# here, or as Message events made here for members of protocols that render no shared lines.
SHIPPED = "shipped"
RENDERED = "rendered"
EVENTS = "events"
RUN_PATHS = (SHIPPED, RENDERED, EVENTS)


class Delivery:
    """The part of ChatService that routes events to connections."""

    log: Logger

    def _init_delivery(self, end_of_turn: Callable[[Callable[[], None]], object] | None) -> None:
        self.stats: dict[str, int] = {"messages": 0, "deliveries": 0}
        # Deliveries caused so far, counted when they are caused (a batched join counts the
        # room's members then): what protocols charge a command's fan-out by.
        self.fanout_caused = 0
        # Counters by protocol, read by the metrics endpoint when it is scraped.  Deliveries
        # of room messages are added per room fan-out (Room.fanout), not per recipient.
        self.messages_by_protocol: dict[str, int] = {}
        self.deliveries_by_protocol: dict[str, int] = {}
        # Cluster mode: other nodes' users' room messages, by the path (RUN_PATHS) by which
        # they reached this node's members; a message counts once on each path it took.
        # Counted once per run of messages, when it has been delivered, not per member.
        self.run_paths: dict[str, int] = dict.fromkeys(RUN_PATHS, 0)
        # Room messages said while connections' input is being handled (see batch()): their
        # delivery to the other members waits for the end of the reactor turn (or of the read,
        # without ``end_of_turn``), one write per member.
        self._batch_depth = 0
        # One context manager for every read: entered once per read of every connection, so
        # a plain object with __enter__/__exit__ rather than a generator-based one.
        self._batching = _Batching(self)
        self._batched: dict[Room, _PendingRoom] = {}
        self._end_of_turn = end_of_turn
        self._flush_scheduled = False
        # Called with every Presence event (a nick online or offline) and every Away,
        # RealnameChange and AccountChange event, for notify lists such as IRC MONITOR and
        # XMPP rosters; an observer must ignore the event types it does not know, and must
        # not raise or block.
        self.observers: list[Callable[[Event], None]] = []

    def _audience(self, user: User) -> list[IChatClient]:
        """Every connection that shares a room with ``user``, and the user's own, once each."""
        seen: set[int] = set()
        clients: list[Any] = []
        for client in user.clients():
            seen.add(id(client))
            clients.append(client)
        for room in user.rooms.values():
            for client in room.clients():
                if id(client) not in seen:
                    seen.add(id(client))
                    clients.append(client)
        return clients

    def observe(self, observer: Callable[[Event], None]) -> None:
        """Call ``observer`` with every Presence, Away and AccountChange event from now on
        (see ``observers``): how a protocol keeps a notify list without scanning users."""
        self.observers.append(observer)

    def _observe(self, event: Event) -> None:
        for observer in list(self.observers):
            try:
                observer(event)
            except Exception:
                self.log.failure("observer {observer} failed", observer=observer)

    def batch(self) -> _Batching:
        """Handle one read of a connection's input inside this (``with service.batch():``).

        Room messages said meanwhile reach their sender at once (so an IRC label or echo
        stays with its command), and every other member at the end of the reactor turn, as
        one :class:`MessageBatch` per room: the messages of every connection read in the turn
        cost each member one write, not one per message.  Any other event flushes the
        batches first, so order is kept.
        """
        return self._batching

    def _end_batch(self) -> None:
        self._batch_depth -= 1
        if not self._batch_depth and self._batched and self._end_of_turn is None:
            self._flush_batches()

    def _pending(self, room: Room) -> _PendingRoom:
        pending = self._batched.get(room)
        if pending is None:
            pending = self._batched[room] = _PendingRoom()
            if self._end_of_turn is not None and not self._flush_scheduled:
                self._flush_scheduled = True
                self._end_of_turn(self._flush_turn)
        return pending

    def _send_membership(self, room: Room, user: User, event: Event, *, was_member: bool) -> None:
        """A join (``was_member`` false) or a part of ``user``: its own connections hear of
        it at once; in a big room, while input is read, everyone else with the turn's batch.

        Each of the user's connections first gets what the room said earlier in the turn if
        it was a member meanwhile, and is then marked as having the batch up to this event:
        a member who joins does not hear of earlier joins (its member list has them), one
        who parts hears of everything before it leaves."""
        if not self._may_batch() or len(room.members) < MEMBERSHIP_BATCH_FROM:
            if not was_member:
                # The room's batch, sent out first, holds what it said before this join: the
                # joiner is a member already, yet must get none of it (nor ahead of its join).
                waiting = self._batched.get(room)
                if waiting is not None:
                    for client in user.clients():
                        waiting.delivered[id(client)] = len(waiting.events)
            self._send(room.clients(), event)
            return
        # What other rooms said this turn comes first, as for any other event.
        self._flush_batches(keep=room)
        pending = self._pending(room)
        events = pending.events
        delivered = pending.delivered
        mine = list(user.clients())
        for client in mine:
            if was_member:
                had = delivered.get(id(client))
                if had is not None:
                    self._deliver_rest(client, events, had)
                else:
                    self._deliver_all(client, events)
            self._deliver_one(client, event)
        events.append(event)
        pending.others += 1
        for client in mine:
            delivered[id(client)] = len(events)
        self.stats["deliveries"] += len(mine)
        by_protocol = self.deliveries_by_protocol
        for client in mine:
            protocol = client.protocol
            by_protocol[protocol] = by_protocol.get(protocol, 0) + 1
        self.fanout_caused += len(room.members)

    def _may_batch(self) -> bool:
        """Whether an event may wait for the end of the turn: while input is read, or
        whenever the turn's end flushes (a connection lost, a timer)."""
        return bool(self._batch_depth) or self._end_of_turn is not None

    def _send_quit(self, user: User, event: Event) -> None:
        """A user is gone: everyone who shares a room with it hears of it once.  The members
        of its biggest room, if that is big, hear of it with that room's batch; the rest
        (its own connections, members of its other rooms only) at once."""
        big: Room | None = None
        if self._may_batch():
            for room in user.rooms.values():
                size = len(room.members)
                if size >= MEMBERSHIP_BATCH_FROM and (big is None or size > len(big.members)):
                    big = room
        if big is None:
            self._send(self._audience(user), event)
            return
        self._flush_batches(keep=big)
        later = big.members
        seen: set[int] = set()
        now: list[Any] = []
        for client in user.clients():
            seen.add(id(client))
            now.append(client)
        for room in user.rooms.values():
            if room is big:
                continue
            for member in room.members:
                if member in later:
                    continue
                for client in member.clients():
                    if id(client) not in seen:
                        seen.add(id(client))
                        now.append(client)
        self._send(now, event, flush=False)
        pending = self._pending(big)
        pending.events.append(event)
        pending.others += 1
        self.fanout_caused += len(later)

    def _batch_message(self, room: Room, msg: Message) -> None:
        pending = self._batched.get(room) or self._pending(room)
        self.fanout_caused += 1
        origin = msg.origin
        key = id(origin)
        if origin.echo_at_turn_end:
            # Its own copy comes in its place in the turn's batch, like everyone's: one write.
            pending.events.append(msg)
            self.stats["deliveries"] += 1
            protocol = origin.protocol
            self.deliveries_by_protocol[protocol] = self.deliveries_by_protocol.get(protocol, 0) + 1
            return
        if origin.echoes_own_messages:
            had = pending.delivered.get(key, 0)
            if had < len(pending.events):
                # What the room said earlier in this turn comes before the sender's own copy,
                # for the sender as for everyone else.
                self._deliver_rest(origin, pending.events, had)
            pending.events.append(msg)
            pending.delivered[key] = len(pending.events)
        else:
            # A sender that never sees its own messages waits for the end of the turn like
            # everyone else: one write, not one per message the room said before its own.
            pending.events.append(msg)
            pending.delivered.setdefault(key, 0)
            own = pending.own.get(key)
            if own is None:
                pending.own[key] = [len(pending.events) - 1]
            else:
                own.append(len(pending.events) - 1)
        self.stats["deliveries"] += 1
        protocol = origin.protocol
        self.deliveries_by_protocol[protocol] = self.deliveries_by_protocol.get(protocol, 0) + 1
        try:
            origin.deliver(msg)
        except Exception:
            self._delivery_failed(msg, origin)

    def _batch_relayed(self, room: Room, msgs: list[Message]) -> None:
        """Messages of another node's user, for the end of the turn: its stand-in here gets
        nothing (its node delivers to it), so the run joins the batch whole, and it is
        counted as having its own copies, as a sender is (see ``_flush_batches``)."""
        pending = self._batched.get(room) or self._pending(room)
        pending.events.extend(msgs)
        count = len(msgs)
        self.fanout_caused += count
        self.stats["deliveries"] += count
        protocol = msgs[0].origin.protocol
        self.deliveries_by_protocol[protocol] = self.deliveries_by_protocol.get(protocol, 0) + count

    def _batch_run(self, room: Room, run: MessageRun) -> None:
        """A run of another node's user's messages (see ``_batch_relayed``), kept whole."""
        pending = self._batched.get(room) or self._pending(room)
        pending.events.append(run)
        count = run.count
        pending.extra += count - 1
        self.fanout_caused += count
        self.stats["deliveries"] += count
        protocol = run.origin.protocol
        self.deliveries_by_protocol[protocol] = self.deliveries_by_protocol.get(protocol, 0) + count

    def deliver_turn(self) -> None:
        """Deliver what the turn has batched so far now, not at the end of the turn (even
        while input is read): a cluster node does before it sends the turn's messages to
        the others, with the bytes they were rendered to for its own members (see
        ``MessageRun``); a protocol whose senders get their own room messages with the
        turn's batch (``echo_at_turn_end``), before it answers one of them anything else,
        so that the copies of what it said first come first."""
        if self._batched:
            self._flush_batches()

    def _flush_turn(self) -> None:
        self._flush_scheduled = False
        if self._batched:
            self._flush_batches()

    def _flush_batches(self, keep: Room | None = None) -> None:
        """Deliver the turn's batches (but ``keep``'s, which goes on gathering)."""
        batched, self._batched = self._batched, {}
        if keep is not None:
            kept = batched.pop(keep, None)
            if kept is not None:
                self._batched[keep] = kept
        by_protocol = self.deliveries_by_protocol
        for room, pending in batched.items():
            events = pending.events
            delivered = pending.delivered
            batch = MessageBatch(messages=tuple(events))
            only_messages = not pending.others
            for client in room.clients():
                had = delivered.get(id(client))
                if had is None:
                    try:
                        client.deliver_batch(batch)
                    except Exception:
                        self._delivery_failed(events[0], client)
                    continue
                if only_messages:
                    # Where every member talks, every member is a sender: its rest as runs
                    # of the whole batch, found from where its own messages are, not by a
                    # pass over every message of the turn.
                    self._deliver_spans(client, batch, had, pending.own.get(id(client)))
                    continue
                # A sender, or a member who joined in this turn: the rest, without its own
                # (inline: in a room where everyone talks, that is nearly every member).
                rest = tuple(
                    [e for e in (events[had:] if had else events) if e.origin is not client]
                )
                if rest:
                    try:
                        client.deliver_batch(MessageBatch(messages=rest))
                    except Exception:
                        self._delivery_failed(rest[0], client)
            # Every member gets every message once (its sender its own copy, counted when it
            # was delivered), and every join and part (its user's connections counted when
            # they got it, so counted twice, as if they had it in the batch too): the room's
            # fan-out counts say how many by protocol.
            # A run of another node's user stands for its count of messages.
            extra = pending.extra
            messages = len(events) - pending.others + extra
            sent = 0
            for protocol, n in room.fanout():
                sent += n
                by_protocol[protocol] = by_protocol.get(protocol, 0) + n * (len(events) + extra)
            self.stats["deliveries"] += (sent - 1) * messages + sent * pending.others
            if messages:
                for event in events:
                    if isinstance(event, Message):
                        protocol = event.origin.protocol
                        by_protocol[protocol] -= 1
                    elif type(event) is MessageRun:
                        protocol = event.origin.protocol
                        by_protocol[protocol] -= event.count
                        self._count_run(room, event)

    def _count_run(self, room: Room, run: MessageRun) -> None:
        """Count ``run``, just delivered, on the paths it took to this node's members: the
        renderings its members got (its ``rendered`` keys), each the very bytes its node
        shipped or bytes made here, and events for members of other protocols."""
        took_shipped = took_rendered = False
        shipped = run.shipped
        rendered = run.rendered
        for key in shared_renderings(rendered):
            if rendered[key] is shipped.get(key):
                took_shipped = True
            else:
                took_rendered = True
        paths = self.run_paths
        count = run.count
        if took_shipped:
            paths[SHIPPED] += count
        if took_rendered:
            paths[RENDERED] += count
        if any(not renders_shared(protocol) for protocol in room.local_protocols()):
            paths[EVENTS] += count

    def _count_relayed(self, room: Room, count: int) -> None:
        """Count ``count`` messages of another node's user that came one by one, or were
        made here as events (see ``ChatService.relay``): rendered here for this node's
        members of protocols with shared renderings, events for the others."""
        local = room.local_protocols()
        paths = self.run_paths
        if any(renders_shared(protocol) for protocol in local):
            paths[RENDERED] += count
        if any(not renders_shared(protocol) for protocol in local):
            paths[EVENTS] += count

    def _deliver_spans(
        self, client: IChatClient, batch: MessageBatch, start: int, own: list[int] | None
    ) -> None:
        """``batch`` (only messages) from ``start`` on, but for those at the positions
        ``own``, as a batch of runs of it."""
        messages = batch.messages
        spans: list[tuple[int, int]] = []
        if own is not None:
            for i in own:
                if i < start:
                    continue
                if i > start:
                    spans.append((start, i))
                start = i + 1
        if start < len(messages):
            spans.append((start, len(messages)))
        if not spans:
            return
        rest: tuple[Event, ...] = ()
        for a, b in spans:
            rest += messages[a:b]
        try:
            client.deliver_batch(MessageBatch(messages=rest, base=batch, spans=tuple(spans)))
        except Exception:
            self._delivery_failed(rest[0], client)

    def _deliver_rest(self, client: IChatClient, events: list[Event], start: int) -> None:
        """The events from ``start`` on, but for the messages ``client`` sent itself."""
        rest = tuple(e for e in events[start:] if e.origin is not client)
        self._deliver_all(client, rest)

    def _deliver_all(self, client: IChatClient, events: Sequence[Event]) -> None:
        if not events:
            return
        try:
            client.deliver_batch(MessageBatch(messages=tuple(events)))
        except Exception:
            self._delivery_failed(events[0], client)

    def _deliver_one(self, client: IChatClient, event: Event) -> None:
        try:
            client.deliver(event)
        except Exception:
            self._delivery_failed(event, client)

    def _send(
        self,
        clients: Iterable[IChatClient],
        event: Event,
        fanout: Sequence[tuple[str, int]] | None = None,
        *,
        flush: bool = True,
    ) -> None:
        """Deliver ``event`` to each client.  ``fanout``, when given, is how many of
        ``clients`` each protocol has (a room's cached counts); otherwise they are counted here.
        The turn's batches go first (unless the caller has seen to them: ``flush``)."""
        if flush and self._batched:
            # Anything else said or done keeps its place after the batched messages.
            self._flush_batches()
        count = 0
        by_protocol = self.deliveries_by_protocol
        if fanout is None:
            for client in clients:
                count += 1
                protocol = client.protocol
                by_protocol[protocol] = by_protocol.get(protocol, 0) + 1
                try:
                    client.deliver(event)
                except Exception:
                    # One broken connection must not stop the others from getting the event.
                    self._delivery_failed(event, client)
        else:
            for client in clients:
                count += 1
                try:
                    client.deliver(event)
                except Exception:
                    self._delivery_failed(event, client)
            for protocol, n in fanout:
                by_protocol[protocol] = by_protocol.get(protocol, 0) + n
        self.stats["deliveries"] += count
        self.fanout_caused += count

    def _delivery_failed(self, event: Event, client: IChatClient) -> None:
        self.log.failure(
            "delivering {event} to {client}", event=type(event).__name__, client=client
        )


class _Batching:
    """``with service.batch():`` (see :meth:`Delivery.batch`); re-entrant."""

    __slots__ = ("delivery",)

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery

    def __enter__(self) -> None:
        self.delivery._batch_depth += 1

    def __exit__(self, *exc: object) -> None:
        self.delivery._end_batch()


class _PendingRoom:
    """A room's events waiting for the end of the turn (its messages, and joins and parts
    in a big room); for each connection of a sender or of a user who joined or parted,
    how many of them it already has (or must never get); and how many are not messages
    (and how many more messages there are than events: see ``extra``)."""

    __slots__ = ("delivered", "events", "extra", "others", "own")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.delivered: dict[int, int] = {}
        self.others = 0
        # The messages runs of other nodes' users hold beyond the one event each is.
        self.extra = 0
        # Where in ``events`` each connection that never sees its own messages said its own.
        self.own: dict[int, list[int]] = {}


def unique_clients(
    first: Iterable[IChatClient], second: Iterable[IChatClient]
) -> list[IChatClient]:
    """The clients of ``first`` and then those of ``second`` not already in it."""
    out = list(first)
    seen = {id(c) for c in out}
    out.extend(c for c in second if id(c) not in seen)
    return out
