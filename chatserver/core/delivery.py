"""Fan-out and delivery: how events reach connections.

One event is built once and handed to every recipient's ``IChatClient.deliver``; room
messages said while connections' input is being read wait for the end of the reactor turn
and go out as one :class:`MessageBatch` per room, one write per member.  Nothing here does
work per recipient beyond the ``deliver`` call: the per-protocol counters of a room fan-out
come from the room's cached counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from chatserver.core.events import Event, Message, MessageBatch

if TYPE_CHECKING:
    from chatserver.core.rooms import Room
    from chatserver.core.users import User


class Delivery:
    """The part of ChatService that routes events to connections."""

    log: Logger

    def _init_delivery(self, end_of_turn: Callable[[Callable[[], None]], object] | None) -> None:
        self.stats: dict[str, int] = {"messages": 0, "deliveries": 0}
        # Counters by protocol, read by the metrics endpoint when it is scraped.  Deliveries
        # of room messages are added per room fan-out (Room.fanout), not per recipient.
        self.messages_by_protocol: dict[str, int] = {}
        self.deliveries_by_protocol: dict[str, int] = {}
        # Room messages said while connections' input is being handled (see batch()): their
        # delivery to the other members waits for the end of the reactor turn (or of the read,
        # without ``end_of_turn``), one write per member.
        self._batch_depth = 0
        self._batched: dict[Room, _PendingRoom] = {}
        self._end_of_turn = end_of_turn
        self._flush_scheduled = False
        # Called with every Presence event (a nick online or offline), every Away event and
        # every AccountChange (a login or logout), for notify lists such as IRC MONITOR and
        # XMPP rosters; an observer must ignore the event types it does not know, and must not
        # raise or block.
        self.observers: list[Callable[[Event], None]] = []

    def _audience(self, user: User) -> list[Any]:
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

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Handle one read of a connection's input inside this.

        Room messages said meanwhile reach their sender at once (so an IRC label or echo
        stays with its command), and every other member at the end of the reactor turn, as
        one :class:`MessageBatch` per room: the messages of every connection read in the turn
        cost each member one write, not one per message.  Any other event flushes the
        batches first, so order is kept.
        """
        self._batch_depth += 1
        try:
            yield
        finally:
            self._batch_depth -= 1
            if not self._batch_depth and self._batched and self._end_of_turn is None:
                self._flush_batches()

    def _batch_message(self, room: Room, msg: Message) -> None:
        pending = self._batched.get(room)
        if pending is None:
            pending = self._batched[room] = _PendingRoom()
            if self._end_of_turn is not None and not self._flush_scheduled:
                self._flush_scheduled = True
                self._end_of_turn(self._flush_turn)
        origin = msg.origin
        key = id(origin)
        if getattr(origin, "echo_at_turn_end", False):
            # Its own copy comes in its place in the turn's batch, like everyone's: one write.
            pending.messages.append(msg)
            self.stats["deliveries"] += 1
            protocol = getattr(origin, "protocol", "?")
            self.deliveries_by_protocol[protocol] = self.deliveries_by_protocol.get(protocol, 0) + 1
            return
        if getattr(origin, "echoes_own_messages", True):
            had = pending.delivered.get(key, 0)
            if had < len(pending.messages):
                # What the room said earlier in this turn comes before the sender's own copy,
                # for the sender as for everyone else.
                self._deliver_rest(origin, pending.messages, had)
            pending.messages.append(msg)
            pending.delivered[key] = len(pending.messages)
        else:
            # A sender that never sees its own messages waits for the end of the turn like
            # everyone else: one write, not one per message the room said before its own.
            pending.messages.append(msg)
            pending.delivered.setdefault(key, 0)
        self.stats["deliveries"] += 1
        protocol = getattr(origin, "protocol", "?")
        self.deliveries_by_protocol[protocol] = self.deliveries_by_protocol.get(protocol, 0) + 1
        try:
            origin.deliver(msg)
        except Exception:
            self._delivery_failed(msg, origin)

    def _flush_turn(self) -> None:
        self._flush_scheduled = False
        if self._batched:
            self._flush_batches()

    def _flush_batches(self) -> None:
        batched, self._batched = self._batched, {}
        by_protocol = self.deliveries_by_protocol
        for room, pending in batched.items():
            messages = pending.messages
            delivered = pending.delivered
            batch = MessageBatch(messages=tuple(messages))
            for client in room.clients():
                had = delivered.get(id(client))
                if had is not None:
                    # A sender: the rest, without its own.
                    self._deliver_rest(client, messages, had)
                    continue
                deliver_batch = getattr(client, "deliver_batch", None)
                try:
                    if deliver_batch is not None:
                        deliver_batch(batch)
                    else:
                        for msg in messages:
                            client.deliver(msg)
                except Exception:
                    self._delivery_failed(messages[0], client)
            # Every member gets every message once (its sender its own copy, counted when it
            # was delivered): the room's fan-out counts say how many by protocol.
            sent = 0
            for protocol, n in room.fanout():
                sent += n
                by_protocol[protocol] = by_protocol.get(protocol, 0) + n * len(messages)
            self.stats["deliveries"] += (sent - 1) * len(messages)
            for msg in messages:
                protocol = getattr(msg.origin, "protocol", "?")
                by_protocol[protocol] -= 1

    def _deliver_rest(self, client: Any, messages: list[Message], start: int) -> None:
        """The messages from ``start`` on that ``client`` did not send itself."""
        rest = tuple(m for m in messages[start:] if m.origin is not client)
        if not rest:
            return
        deliver_batch = getattr(client, "deliver_batch", None)
        try:
            if deliver_batch is not None:
                deliver_batch(MessageBatch(messages=rest))
            else:
                for msg in rest:
                    client.deliver(msg)
        except Exception:
            self._delivery_failed(rest[0], client)

    def _deliver_one(self, client: Any, event: Event) -> None:
        try:
            client.deliver(event)
        except Exception:
            self._delivery_failed(event, client)

    def _send(
        self,
        clients: Iterable[Any],
        event: Event,
        fanout: Sequence[tuple[str, int]] | None = None,
    ) -> None:
        """Deliver ``event`` to each client.  ``fanout``, when given, is how many of
        ``clients`` each protocol has (a room's cached counts); otherwise they are counted here."""
        if self._batched:
            # Anything else said or done keeps its place after the batched messages.
            self._flush_batches()
        count = 0
        by_protocol = self.deliveries_by_protocol
        if fanout is None:
            for client in clients:
                count += 1
                protocol = getattr(client, "protocol", "?")
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

    def _delivery_failed(self, event: Event, client: Any) -> None:
        self.log.failure(
            "delivering {event} to {client}", event=type(event).__name__, client=client
        )


class _PendingRoom:
    """A room's messages waiting for the end of the turn, and, for each sender's
    connection, how many of them it already has (what came before its own message, when it
    sees its own messages)."""

    __slots__ = ("delivered", "messages")

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.delivered: dict[int, int] = {}


def unique_clients(first: Iterable[Any], second: Iterable[Any]) -> list[Any]:
    """The clients of ``first`` and then those of ``second`` not already in it."""
    out = list(first)
    seen = {id(c) for c in out}
    out.extend(c for c in second if id(c) not in seen)
    return out
