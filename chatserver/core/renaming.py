"""Renaming a room: the room, its members, modes and registration, and its history, all
move to the new name; the members are told with one ``RoomRenamed`` event."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed

from chatserver.core.errors import BadName, NotOnRoom, NotPermitted
from chatserver.core.events import Event, RoomRenamed, Who
from chatserver.core.interfaces import IChatClient, IClusterLink
from chatserver.core.names import room_key

if TYPE_CHECKING:
    from chatserver.core.rooms import Room
    from chatserver.core.users import Connection, User


class RoomRenaming:
    """The part of ChatService that renames rooms."""

    clock: Any
    cluster: IClusterLink | None
    rooms: dict[str, Room]
    _room_metadata: dict[str, dict[str, str]]
    room_store: Any
    history_store: Any
    log: Any

    if TYPE_CHECKING:

        def _user(self, conn: Connection) -> User: ...
        def _room(self, name: str) -> Room: ...
        def _new_id(self) -> str: ...
        def flush_history(self) -> Deferred: ...
        def _send(
            self,
            clients: Iterable[IChatClient],
            event: Event,
            fanout: Sequence[tuple[str, int]] | None = None,
        ) -> None: ...

    def rename_room(self, conn: Connection, name: str, new_name: str, reason: str = "") -> Room:
        """Rename the room ``name`` to ``new_name`` (operators of the room, or server
        operators); returns the room.  Raises NoSuchRoom, NotOnRoom, NotPermitted, or
        BadName when the new name is invalid or taken.  The store follows (registration,
        history) in the background."""
        user = self._user(conn)
        room = self._room(name)
        new = room_key(new_name)
        member = room.members.get(user)
        oper = "oper" in user.modes
        if member is None and not oper:
            raise NotOnRoom(room.name)
        if (member is None or not member.op) and not oper:
            raise NotPermitted("only room operators may rename the room", room=room.name)
        if new == room.name:
            raise BadName(new_name, f"the room is already called {new}")
        if new in self.rooms:
            raise BadName(new_name, f"a room called {new} exists")
        old = room.name
        event = self._rename_in_memory(room, new, user.who(), reason, conn.client)
        if self.cluster is not None and user.node is None:
            self.cluster.local_event(event)
        self._move_stored(room, old)
        return room

    def rename_room_elsewhere(self, conn: Connection, old: str, new: str, reason: str) -> None:
        """The user of another node (``conn`` its stand-in here) renamed the room ``old``
        to ``new`` there; that node moved what is stored."""
        room = self.rooms.get(old)
        if room is None or conn.user is None:
            return
        if new in self.rooms:
            self.log.warn("cannot rename {old} to {new}: taken here", old=old, new=new)
            return
        self._rename_in_memory(room, new, conn.user.who(), reason, conn.client)

    def _rename_in_memory(
        self, room: Room, new: str, who: Who, reason: str, origin: IChatClient
    ) -> RoomRenamed:
        old = room.name
        del self.rooms[old]
        room.name = new
        self.rooms[new] = room
        for member_user in room.members:
            member_user.rooms.pop(old, None)
            member_user.rooms[new] = room
        # Kept in memory for replay on join: they now belong to the new name.
        kept = [dataclasses.replace(msg, room=new) for msg in room.history]
        room.history.clear()
        room.history.extend(kept)
        # Its metadata too: a room made later under the old name starts without it.
        metadata = self._room_metadata.pop(old, None)
        if metadata is not None:
            self._room_metadata[new] = metadata
        event = RoomRenamed(
            ts=self.clock.seconds(), old=old, new=new, who=who, reason=reason, origin=origin
        )
        self._send(list(room.clients()), event)
        return event

    def _move_stored(self, room: Room, old: str) -> Deferred:
        """The registration and the history of ``old`` go to the room's new name, after
        whatever was said before (the store runs its work in order)."""
        d: Deferred = self.flush_history()
        new = room.name

        def history(_: Any) -> Deferred:
            return self.history_store.rename_target(old, new)

        def registration(_: Any) -> Deferred:
            if not room.registered:
                return succeed(None)
            d = self.room_store.delete_room(old)
            return d.addCallback(lambda _: self.room_store.save_room(room.to_record()))

        d.addCallback(history)
        d.addCallback(registration)
        d.addErrback(lambda f: self.log.failure("moving {old} to {new}", f, old=old, new=new))
        return d
