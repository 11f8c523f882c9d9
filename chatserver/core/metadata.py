"""Metadata: key/value pairs on users and rooms (a display name, an avatar URL, a status),
shared by every protocol (IRC ``draft/metadata-2``, XMPP nicknames and avatars).

A user's metadata belongs to its account when it is logged in to one (it is there again on the
next login while the server runs), else to its nick until it quits.  A room's belongs to the
room while it exists.  Changes are told with a :class:`~chatserver.core.events.MetadataChange`:
a user's to its own other connections and to everyone it shares a room with, a room's to its
members.  Only the user itself (or a server operator) changes a user's metadata; only a room
operator (or a server operator) a room's.  Non-members read a room's metadata only when the
room is neither secret nor invite-only.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from chatserver.core.delivery import unique_clients
from chatserver.core.errors import BadText, LimitExceeded, NoSuchRoom, NotPermitted
from chatserver.core.events import MetadataChange
from chatserver.core.interfaces import IChatClient, IClusterLink
from chatserver.core.names import casefold, metadata_key, room_key, text_problem

if TYPE_CHECKING:
    from chatserver.core.rooms import Room
    from chatserver.core.users import Connection, User

# Keys a user or a room may hold, and the longest value, in UTF-8 bytes.
MAX_KEYS = 20
MAX_VALUE_BYTES = 300


def check_value(value: str) -> None:
    problem = text_problem(value)
    if problem is not None:
        raise BadText(problem)
    if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
        raise BadText(f"metadata values are at most {MAX_VALUE_BYTES} bytes")
    if "\r" in value or "\n" in value:
        raise BadText("metadata values are one line")


def room_is_open(room: Room) -> bool:
    return "secret" not in room.flags and "invite_only" not in room.flags


class Metadata:
    """The part of ChatService that keeps metadata."""

    # The limits, for protocols to advertise (IRC's capability value).
    metadata_max_keys = MAX_KEYS
    metadata_max_value_bytes = MAX_VALUE_BYTES

    clock: Any
    cluster: IClusterLink | None
    rooms: dict[str, Room]

    if TYPE_CHECKING:

        def _user(self, conn: Connection) -> User: ...
        def _room(self, name: str) -> Room: ...
        def _find(self, nick: str) -> User: ...
        def _send(self, clients: Any, event: Any, counts: Any = None) -> None: ...

    def _init_metadata(self) -> None:
        # Folded account -> {key: value}; a guest's by its User (gone with it, kept across
        # nick changes); room key -> {key: value}.
        self._account_metadata: dict[str, dict[str, str]] = {}
        self._guest_metadata: weakref.WeakKeyDictionary[User, dict[str, str]] = (
            weakref.WeakKeyDictionary()
        )
        self._room_metadata: dict[str, dict[str, str]] = {}

    def _store_of(self, user: User) -> dict[str, str]:
        """The user's metadata, made empty on first use."""
        if user.account is not None:
            return self._account_metadata.setdefault(casefold(user.account), {})
        return self._guest_metadata.setdefault(user, {})

    def _held_by(self, user: User) -> dict[str, str]:
        if user.account is not None:
            return dict(self._account_metadata.get(casefold(user.account), {}))
        return dict(self._guest_metadata.get(user, {}))

    # -- reading ---------------------------------------------------------------------------

    def user_metadata(self, nick: str) -> dict[str, str]:
        """The metadata of the user on ``nick`` (NoSuchNick when nobody is)."""
        return self._held_by(self._find(nick))

    def own_metadata(self, conn: Connection) -> dict[str, str]:
        return self._held_by(self._user(conn))

    def account_metadata(self, account: str) -> dict[str, str]:
        """What an account holds, online or not (empty when nothing was set)."""
        return dict(self._account_metadata.get(casefold(account), {}))

    def room_metadata(self, conn: Connection, name: str) -> dict[str, str]:
        """A room's metadata, for a member, a server operator, or anyone when the room is
        open; NoSuchRoom otherwise (the room is not revealed)."""
        user = self._user(conn)
        room = self._room(name)
        if user not in room.members and "oper" not in user.modes and not room_is_open(room):
            raise NoSuchRoom(room.name)
        return dict(self._room_metadata.get(room.name, {}))

    # -- changing --------------------------------------------------------------------------

    def set_metadata(
        self,
        conn: Connection,
        key: str,
        value: str | None,
        *,
        nick: str | None = None,
        room: str | None = None,
    ) -> MetadataChange | None:
        """Set (``value`` None: remove) ``key`` on the user itself, on ``nick`` (server
        operators) or on ``room`` (its operators); returns the change told, None when
        nothing changed.  Raises BadName (key), BadText (value), LimitExceeded (too many
        keys), NotPermitted, NoSuchNick / NoSuchRoom."""
        key = metadata_key(key)
        if value is not None:
            check_value(value)
        store, target, audience, where = self._target(conn, nick, room)
        current = store.get(key)
        if current == value:
            return None
        if value is None:
            store.pop(key, None)
        else:
            if current is None and len(store) >= MAX_KEYS:
                raise LimitExceeded(f"at most {MAX_KEYS} metadata keys")
            store[key] = value
        event = MetadataChange(
            ts=self.clock.seconds(),
            who=self._user(conn).who(),
            target=target,
            room=where,
            key=key,
            value=value,
            origin=conn.client,
        )
        if not store:
            self._drop_empty()
        self._send(audience, event)
        if self.cluster is not None and self._user(conn).node is None:
            if where is None:
                self.cluster.local_event(event)
            else:
                # Part of the room's state, which is shared whole and stamped: of two
                # changes made at once on two nodes the same one wins on both.
                self.cluster.room_changed(where, event.who)
        return event

    def clear_metadata(
        self, conn: Connection, *, nick: str | None = None, room: str | None = None
    ) -> list[str]:
        """Remove every key of the target (the rules of :meth:`set_metadata`); returns the
        keys removed."""
        store, _target, _audience, _where = self._target(conn, nick, room)
        keys = sorted(store)
        for key in keys:
            self.set_metadata(conn, key, None, nick=nick, room=room)
        return keys

    def _target(
        self, conn: Connection, nick: str | None, room: str | None
    ) -> tuple[dict[str, str], str, Iterable[IChatClient], str | None]:
        """(store, target name, who hears of a change, room key or None)."""
        user = self._user(conn)
        oper = "oper" in user.modes
        if room is not None:
            r = self._room(room)
            member = r.members.get(user)
            if not oper and (member is None or not member.has("op")):
                if member is None and not room_is_open(r):
                    raise NoSuchRoom(r.name)
                raise NotPermitted("only room operators may change its metadata", room=r.name)
            store = self._room_metadata.setdefault(r.name, {})
            return store, r.name, list(r.clients()), r.name
        target = user if nick is None else self._find(nick)
        if target is not user and not oper:
            raise NotPermitted("you may change only your own metadata")
        store = self._store_of(target)
        audience: list[IChatClient] = list(target.clients())
        for r in target.rooms.values():
            audience = unique_clients(audience, r.clients())
        return store, target.nick, audience, None

    def _drop_empty(self) -> None:
        # Only when a store was just emptied: a key removed, rarely.
        for table in (self._account_metadata, self._room_metadata):
            for owner in [k for k, v in table.items() if not v]:
                del table[owner]

    def _forget_room_metadata(self, name: str) -> None:
        self._room_metadata.pop(room_key(name), None)
