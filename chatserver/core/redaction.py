"""Redaction: a message removed from a room's history or from a private archive, and every
member (or both ends) told so with a :class:`~chatserver.core.events.Redaction`.

Who may remove a message: its sender (the same account; for a guest, the same nick from the
same cloak), a room operator in a room, and a server operator anywhere.  The message is
deleted, not marked: history and archive queries never return it again.  A private message
can be found only in an account's archive, so only an account can redact one.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, inlineCallbacks

from chatserver.core.delivery import unique_clients
from chatserver.core.errors import NoSuchMessage, NotOnRoom, NotPermitted
from chatserver.core.events import Message, Redaction, Who
from chatserver.core.interfaces import IClusterLink
from chatserver.core.names import casefold

if TYPE_CHECKING:
    from chatserver.core.rooms import Room
    from chatserver.core.users import Connection, User


def is_sender(user: User, source: Who) -> bool:
    """Whether ``user`` sent a message whose source was ``source``."""
    if source.account is not None:
        return user.account is not None and casefold(user.account) == casefold(source.account)
    # A guest's message: the same nick from the same address (its cloak), and still a guest.
    return user.account is None and casefold(source.nick) == user.key and source.host == user.host


class Redactions:
    """The part of ChatService that removes messages."""

    clock: Any
    cluster: IClusterLink | None
    history_store: Any
    archive_store: Any
    rooms: dict[str, Room]
    _pending_history: list[Message]
    _pending_private: list[Any]

    if TYPE_CHECKING:

        def _user(self, conn: Connection) -> User: ...
        def _room(self, name: str) -> Room: ...
        def _new_id(self) -> str: ...
        def find_user(self, nick: str) -> User | None: ...
        def flush_history(self) -> Deferred: ...
        def _when_flushed(self) -> Deferred: ...
        def _send(self, clients: Any, event: Any, counts: Any = None) -> None: ...

    @inlineCallbacks
    def redact(
        self,
        conn: Connection,
        msgid: str,
        *,
        room: str | None = None,
        nick: str | None = None,
        reason: str = "",
        native: Any = None,
    ):
        """Remove the message ``msgid`` of the room ``room`` or of the private conversation
        with ``nick``; fires with the Redaction everyone concerned was given.

        Fails with NoSuchRoom / NotOnRoom (not a room the user can act in), NoSuchMessage
        (no such message there) or NotPermitted (not the user's to remove).
        """
        user = self._user(conn)
        oper = "oper" in user.modes
        if room is not None:
            r = self._room(room)
            member = r.members.get(user)
            if member is None and not oper:
                raise NotOnRoom(r.name)
            found = next((m for m in r.history if m.id == msgid), None)
            if found is None:
                yield self.flush_history()
                found = yield self.history_store.find(msgid)
            if found is None or found.room != r.name:
                raise NoSuchMessage(msgid, r.name)
            if not (
                is_sender(user, found.source) or oper or (member is not None and member.has("op"))
            ):
                raise NotPermitted("you may not remove this message", room=r.name)
            self._forget(msgid, r)
            yield self._delete_stored(msgid, ())
            event = Redaction(
                ts=self.clock.seconds(),
                id=self._new_id(),
                who=user.who(),
                msgid=msgid,
                sender=found.source,
                reason=reason,
                room=r.name,
                origin=conn.client,
                native=native,
            )
            self._send(r.clients(), event)
            if self.cluster is not None and user.node is None:
                self.cluster.local_event(event)
            return event
        assert nick is not None
        found = None
        if user.account is not None and self.archive_store is not None:
            yield self.flush_history()
            found = yield self.archive_store.find_private(casefold(user.account), msgid)
        peer = casefold(nick)
        if found is None or peer not in (
            casefold(found.source.nick),
            casefold(found.target or ""),
            casefold(found.source.account or ""),
        ):
            raise NoSuchMessage(msgid, nick)
        if not (is_sender(user, found.source) or oper):
            raise NotPermitted("you may not remove this message")
        other = self.find_user(nick)
        # The archives the message can be in: both ends' (an end's archive is its account's).
        owners = {casefold(user.account or ""), peer, casefold(found.source.account or "")}
        if other is not None and other.account is not None:
            owners.add(casefold(other.account))
        owners.discard("")
        self._forget(msgid, None)
        yield self._delete_stored(msgid, tuple(sorted(owners)))
        event = Redaction(
            ts=self.clock.seconds(),
            id=self._new_id(),
            who=user.who(),
            msgid=msgid,
            sender=found.source,
            reason=reason,
            target=nick,
            origin=conn.client,
            native=native,
        )
        theirs = [] if other is None else list(other.clients())
        self._send(unique_clients(theirs, user.clients()), event)
        if self.cluster is not None and user.node is None:
            self.cluster.local_event(event)
        return event

    def apply_redaction(self, event: Redaction) -> None:
        """Another node removed a message (it deleted it from the shared store): it goes
        from what this process keeps in memory, and this process's connections concerned
        are told."""
        if event.room is not None:
            room = self.rooms.get(event.room)
            if room is None:
                return
            self._forget(event.msgid, room)
            self._send(room.clients(), event)
            return
        self._forget(event.msgid, None)
        other = self.find_user(event.target or "")
        if other is not None:
            self._send(other.clients(), event)

    def _forget(self, msgid: str, room: Room | None) -> None:
        """Take the message out of what is kept in memory and what waits to be written."""
        if room is not None and any(m.id == msgid for m in room.history):
            room.history = deque((m for m in room.history if m.id != msgid), room.history.maxlen)
        self._pending_history = [m for m in self._pending_history if m.id != msgid]
        self._pending_private = [e for e in self._pending_private if e.message.id != msgid]

    @inlineCallbacks
    def _delete_stored(self, msgid: str, owners: tuple[str, ...]):
        # A write in progress may hold the message: the delete comes after it.  It is done
        # before anyone is told, so that a history query made on the news never returns it.
        yield self._when_flushed()
        yield self.history_store.delete_message(msgid, owners)
