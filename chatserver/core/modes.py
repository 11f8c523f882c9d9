"""Modes: room modes (flags, key, limit, ban and invite lists, op and voice) and users' own.

Each change is applied on its own: what can be applied is, and announced as one ModeChange;
what cannot comes back as an error per item.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from chatserver.core.errors import ChatError, NotOnRoom, NotPermitted, UnknownMode
from chatserver.core.events import Event, ModeChange, ModeItem, UserModeChange, Who
from chatserver.core.interfaces import IChatClient, IClusterLink
from chatserver.core.names import casefold
from chatserver.core.records import BanRecord
from chatserver.core.rooms import ALL_MODES, FLAG_MODES, LIST_MODES, STATUS_MODES, normalize_mask

if TYPE_CHECKING:
    from chatserver.core.rooms import Room
    from chatserver.core.users import Connection, NickTable, User

# The user modes users may set on themselves ('oper' may only be dropped).
USER_MODES_SELF = frozenset({"invisible", "wallops", "bot"})
USER_MODES = USER_MODES_SELF | {"oper"}


class RoomModes:
    """The part of ChatService that changes room modes and users' own modes."""

    clock: Any
    users: NickTable
    cluster: IClusterLink | None

    if TYPE_CHECKING:

        def _user(self, conn: Connection) -> User: ...
        def _room(self, name: str) -> Room: ...
        def _find(self, nick: str) -> User: ...
        def _persist(self, room: Room) -> None: ...
        def _send(
            self,
            clients: Iterable[IChatClient],
            event: Event,
            fanout: Sequence[tuple[str, int]] | None = None,
        ) -> None: ...

    def set_mode(
        self, conn: Connection, name: str, changes: Sequence[ModeItem]
    ) -> tuple[tuple[ModeItem, ...], list[ChatError]]:
        """Apply room mode changes; returns (applied, errors for the items that were refused)."""
        user = self._user(conn)
        room = self._room(name)
        member = room.members.get(user)
        if member is None and "oper" not in user.modes:
            raise NotOnRoom(room.name)
        if (member is None or not member.op) and "oper" not in user.modes:
            raise NotPermitted("only room operators may change modes", room=room.name)
        return self._apply_modes(room, user, changes, user.who(), origin=conn.client)

    def _apply_modes(
        self,
        room: Room,
        user: User,
        changes: Sequence[ModeItem],
        shown_as: Who,
        origin: IChatClient | None = None,
    ) -> tuple[tuple[ModeItem, ...], list[ChatError]]:
        """Apply each change it can, announce them as one ModeChange by ``shown_as``."""
        applied: list[ModeItem] = []
        errors: list[ChatError] = []
        now = self.clock.seconds()
        for item in changes:
            try:
                done = self._apply_mode(room, user, item, now)
            except ChatError as err:
                errors.append(err)
                continue
            if done is not None:
                applied.append(done)
        if applied:
            event = ModeChange(
                ts=now, room=room.name, who=shown_as, changes=tuple(applied), origin=origin
            )
            self._send(room.clients(), event)
            self._persist(room)
            if self.cluster is not None and user.node is None:
                self.cluster.room_changed(room.name, shown_as)
        return tuple(applied), errors

    def _apply_mode(self, room: Room, user: User, item: ModeItem, now: float) -> ModeItem | None:
        mode, adding, arg = item.mode, item.adding, item.arg
        if mode not in ALL_MODES:
            raise UnknownMode(mode)
        if mode in FLAG_MODES:
            if adding == (mode in room.flags):
                return None
            (room.flags.add if adding else room.flags.discard)(mode)
            return ModeItem(adding, mode)
        if mode == "key":
            if adding:
                if not arg or " " in arg:
                    return None
                room.key = arg
                return ModeItem(True, "key", arg)
            if room.key is None:
                return None
            room.key = None
            return ModeItem(False, "key", "*")
        if mode == "limit":
            if adding:
                if not arg or not (arg.isascii() and arg.isdigit()) or int(arg) <= 0:
                    return None
                room.limit = int(arg)
                return ModeItem(True, "limit", str(room.limit))
            if room.limit is None:
                return None
            room.limit = None
            return ModeItem(False, "limit")
        if mode in LIST_MODES:
            if not arg:
                return None
            mask = normalize_mask(arg)
            if mode == "ban":
                present = [b for b in room.bans if casefold(b.mask) == casefold(mask)]
                if adding and not present:
                    room.bans.append(BanRecord(mask, user.who().mask, now))
                elif not adding and present:
                    room.bans.remove(present[0])
                    mask = present[0].mask
                else:
                    return None
            else:
                masks = room.invites if mode == "invite" else room.excepts
                present_masks = [m for m in masks if casefold(m) == casefold(mask)]
                if adding and not present_masks:
                    masks.append(mask)
                elif not adding and present_masks:
                    masks.remove(present_masks[0])
                    mask = present_masks[0]
                else:
                    return None
            return ModeItem(adding, mode, mask)
        # Status modes: op, voice on a member.
        assert mode in STATUS_MODES
        if not arg:
            return None
        target = room.find_member(arg)
        if target is None:
            self._find(arg)
            raise NotOnRoom(room.name, arg)
        tmember = room.members[target]
        if getattr(tmember, mode) == adding:
            return None
        setattr(tmember, mode, adding)
        if room.registered and target.account is not None:
            reg = room.reg_ops if mode == "op" else room.reg_voices
            (reg.add if adding else reg.discard)(casefold(target.account))
        return ModeItem(adding, mode, target.nick)

    def set_mode_registered(
        self, conn: Connection, name: str, changes: Sequence[ModeItem], *, by: Who
    ) -> tuple[tuple[ModeItem, ...], list[ChatError]]:
        """Room mode changes through the room service (ChanServ), shown as made by ``by``.

        Allowed to the owner and the registered operators (by account) of a registered room,
        whether or not they are in the room or opped there.
        """
        user = self._user(conn)
        room = self._room(name)
        if not room.registered:
            raise ChatError(f"{room.name} is not registered")
        account = casefold(user.account) if user.account is not None else None
        if account is None or (
            account != casefold(room.owner or "") and account not in room.reg_ops
        ):
            raise NotPermitted(
                "only the room's owner and registered operators may do that", room=room.name
            )
        return self._apply_modes(room, user, changes, by)

    def set_user_modes(self, conn: Connection, changes: Sequence[ModeItem]) -> tuple[ModeItem, ...]:
        """Change the user's own modes: invisible, wallops, bot; 'oper' may only be dropped."""
        user = self._user(conn)
        applied = []
        for item in changes:
            allowed = item.mode in USER_MODES_SELF or (item.mode == "oper" and not item.adding)
            if not allowed:
                if item.mode not in USER_MODES:
                    raise UnknownMode(item.mode)
                continue
            if self.users.set_mode(user, item.mode, item.adding):
                applied.append(ModeItem(item.adding, item.mode))
        if applied:
            user.changed()
            event = UserModeChange(
                ts=self.clock.seconds(),
                who=user.who(),
                changes=tuple(applied),
                origin=conn.client,
            )
            self._send(user.clients(), event)
            self._share_user_modes(user, event)
        return tuple(applied)

    def grant_oper(self, conn: Connection) -> None:
        """Make the user a server operator (the protocol has checked the operator credentials)."""
        user = self._user(conn)
        if self.users.set_mode(user, "oper", True):
            user.changed()
            event = UserModeChange(
                ts=self.clock.seconds(), who=user.who(), changes=(ModeItem(True, "oper"),)
            )
            self._send(user.clients(), event)
            self._share_user_modes(user, event)

    def _share_user_modes(self, user: User, event: UserModeChange) -> None:
        # The other nodes decide for this user too (an operator's powers, WHO and WHOIS).
        if self.cluster is not None and user.node is None:
            self.cluster.local_event(event)
