"""What the other processes of a cluster tell this core: a room's whole state, and accounts
registered, deleted or revoked there.

A room's state (modes, lists, invitations, topic, members' status, registration, metadata)
is made the same here as on the node that changed it by :meth:`Replica.apply_room_state`,
which tells this process's members what changed (as one ModeChange, a Topic and a
MetadataChange per key) and stores nothing: the node where the change was made stored it.
Which of two states wins is the cluster's decision (``chatserver.cluster``); the core only
applies one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatserver.core.events import (
    ACCOUNT_DELETED,
    AccountChange,
    Event,
    MetadataChange,
    ModeChange,
    ModeItem,
    Topic,
    Who,
)
from chatserver.core.interfaces import IChatClient
from chatserver.core.modes import USER_MODES
from chatserver.core.names import casefold
from chatserver.core.records import BanRecord
from chatserver.core.rooms import FLAG_MODES, Room

if TYPE_CHECKING:
    from chatserver.core.accounts import AccountManager
    from chatserver.core.settings import CoreSettings
    from chatserver.core.users import Connection, NickTable, User


@dataclass(frozen=True, slots=True)
class RoomState:
    """Everything about a room that its members' actions change, but membership itself."""

    name: str
    flags: tuple[str, ...] = ()
    key: str | None = None
    limit: int | None = None
    bans: tuple[BanRecord, ...] = ()
    invites: tuple[str, ...] = ()
    excepts: tuple[str, ...] = ()
    # Folded nicks invited (one-shot), as Room.invited.
    invited: tuple[str, ...] = ()
    topic: str = ""
    topic_by: str = ""
    topic_at: float = 0.0
    topic_id: str = ""
    # Folded nick -> "o", "v", "ov" or "" for each member the state's node knew of.
    members: tuple[tuple[str, str], ...] = ()
    registered: bool = False
    owner: str | None = None
    reg_ops: tuple[str, ...] = ()
    reg_voices: tuple[str, ...] = ()
    retention: float | None = None
    # (key, value) pairs, sorted by key.
    metadata: tuple[tuple[str, str], ...] = ()


def _list_changes(mode: str, old: Sequence[str], new: Sequence[str]) -> list[ModeItem]:
    before = {casefold(m) for m in old}
    after = {casefold(m) for m in new}
    return [ModeItem(False, mode, m) for m in old if casefold(m) not in after] + [
        ModeItem(True, mode, m) for m in new if casefold(m) not in before
    ]


class Replica:
    """The part of ChatService that applies what other nodes of a cluster changed."""

    clock: Any
    settings: CoreSettings
    rooms: dict[str, Room]
    users: NickTable
    accounts: AccountManager
    server_who: Who
    by_account: dict[str, User]
    _detached: dict[str, float]
    _room_metadata: dict[str, dict[str, str]]

    if TYPE_CHECKING:

        def _load_recent(self, room: Room) -> Any: ...
        def _logout_user(self, user: User) -> None: ...
        def _audience(self, user: User) -> list[IChatClient]: ...
        def _observe(self, event: Event) -> None: ...
        def _forget_room_metadata(self, name: str) -> None: ...
        def _check_enforcement(self, user: User) -> None: ...
        def _forget_blocks(self, name: str) -> None: ...
        def _forget_always_on(self, name: str, reason: str) -> None: ...
        def account_revoked(
            self, account: str, reason: str, *, keep: Any = None, local_only: bool = False
        ) -> list[str]: ...
        def _send(
            self,
            clients: Iterable[IChatClient],
            event: Event,
            fanout: Sequence[tuple[str, int]] | None = None,
        ) -> None: ...

    def room_state(self, name: str) -> RoomState | None:
        room = self.rooms.get(name)
        if room is None:
            return None
        return RoomState(
            name=room.name,
            flags=tuple(sorted(room.flags)),
            key=room.key,
            limit=room.limit,
            bans=tuple(room.bans),
            invites=tuple(room.invites),
            excepts=tuple(room.excepts),
            invited=tuple(sorted(room.invited)),
            topic=room.topic,
            topic_by=room.topic_by,
            topic_at=room.topic_at,
            topic_id=room.topic_id,
            members=tuple(
                (user.key, ("o" if m.op else "") + ("v" if m.voice else ""))
                for user, m in room.members.items()
            ),
            registered=room.registered,
            owner=room.owner,
            reg_ops=tuple(sorted(room.reg_ops)),
            reg_voices=tuple(sorted(room.reg_voices)),
            retention=room.retention,
            metadata=tuple(sorted(self._room_metadata.get(room.name, {}).items())),
        )

    def apply_room_state(self, state: RoomState, by: Who | None) -> bool:
        """Make the room what ``state`` says (``by`` changed it; None: the server), and tell
        this process's members the difference (one ModeChange, a Topic, a MetadataChange per
        key); False when there is no such room here.  A
        room nobody here is in is made only when it is registered (it then exists
        everywhere); members the state does not name keep their status (they joined after
        it was taken)."""
        room = self.rooms.get(state.name)
        now = self.clock.seconds()
        if room is None:
            if not state.registered:
                return False
            room = Room(state.name, now, self.settings.history_in_memory)
            self.rooms[room.name] = room
            self._load_recent(room)
        changes: list[ModeItem] = []
        flags = {f for f in state.flags if f in FLAG_MODES}
        changes += [ModeItem(False, f) for f in sorted(room.flags - flags)]
        changes += [ModeItem(True, f) for f in sorted(flags - room.flags)]
        room.flags = flags
        if room.key != state.key:
            changes.append(
                ModeItem(True, "key", state.key) if state.key else ModeItem(False, "key", "*")
            )
            room.key = state.key
        if room.limit != state.limit:
            changes.append(
                ModeItem(True, "limit", str(state.limit))
                if state.limit
                else ModeItem(False, "limit")
            )
            room.limit = state.limit
        changes += _list_changes("ban", [b.mask for b in room.bans], [b.mask for b in state.bans])
        room.bans = list(state.bans)
        changes += _list_changes("except", room.excepts, state.excepts)
        room.excepts = list(state.excepts)
        changes += _list_changes("invite", room.invites, state.invites)
        room.invites = list(state.invites)
        room.invited = set(state.invited)
        statuses = dict(state.members)
        for user, member in room.members.items():
            wanted = statuses.get(user.key)
            if wanted is None:
                continue
            for mode, letter in (("op", "o"), ("voice", "v")):
                has = letter in wanted
                if getattr(member, mode) != has:
                    setattr(member, mode, has)
                    changes.append(ModeItem(has, mode, user.nick))
        room.registered = state.registered
        room.owner = state.owner
        room.reg_ops = set(state.reg_ops)
        room.reg_voices = set(state.reg_voices)
        room.retention = state.retention
        who = by or self.server_who
        if changes:
            self._send(
                room.clients(), ModeChange(ts=now, room=room.name, who=who, changes=tuple(changes))
            )
        if (room.topic, room.topic_id) != (state.topic, state.topic_id):
            room.topic, room.topic_by = state.topic, state.topic_by
            room.topic_at, room.topic_id = state.topic_at, state.topic_id
            topic = Topic(
                ts=state.topic_at, room=room.name, who=who, text=room.topic, id=room.topic_id
            )
            self._send(room.clients(), topic)
        self._take_room_metadata(room, dict(state.metadata), who, now)
        if not room.members and not room.registered:
            # Its registration was dropped elsewhere while nobody was in it.
            self.rooms.pop(room.name, None)
            self._forget_room_metadata(room.name)
        return True

    def _take_room_metadata(self, room: Room, wanted: dict[str, str], who: Who, now: float) -> None:
        held = self._room_metadata.get(room.name, {})
        if held == wanted:
            return
        if wanted:
            self._room_metadata[room.name] = wanted
        else:
            self._room_metadata.pop(room.name, None)
        for key in sorted(held.keys() | wanted.keys()):
            value = wanted.get(key)
            if held.get(key) != value:
                event = MetadataChange(
                    ts=now, who=who, target=room.name, room=room.name, key=key, value=value
                )
                self._send(room.clients(), event)

    def user_modes_elsewhere(self, conn: Connection, modes: Iterable[str]) -> None:
        """The user of another node (``conn`` its stand-in here) has the user modes ``modes``
        there (its node granted them): this node decides for it as its node does (an
        operator's powers, WHO and WHOIS)."""
        user = conn.user
        if user is None or user.node is None:
            return
        wanted = {mode for mode in modes if mode in USER_MODES}
        changed = False
        for mode in user.modes ^ wanted:
            changed = self.users.set_mode(user, mode, mode in wanted) or changed
        if changed:
            user.changed()

    def account_login_elsewhere(self, conn: Connection, account: str | None) -> None:
        """The user of another node (``conn`` its stand-in here) logged in to ``account``
        there (None: logged out); its node checked it."""
        user = conn.user
        if user is None or user.node is None:
            return
        if account is None:
            if user.account is not None:
                self._logout_user(user)
            return
        previous = user.account
        if previous is not None and self.by_account.get(casefold(previous)) is user:
            del self.by_account[casefold(previous)]
        user.account = conn.account = account
        user.changed()
        self.by_account.setdefault(casefold(account), user)
        event = AccountChange(
            ts=self.clock.seconds(), who=user.who(), account=account, previous=previous
        )
        self._send(self._audience(user), event)
        self._observe(event)

    def let_go(self, account: str) -> bool:
        """Another node holds the user of ``account`` (an always-on account both nodes
        restored from the shared store at their start): the one kept here without
        connections is removed, without a word, and True returned; False when there is none
        such here."""
        key = casefold(account)
        user = self.by_account.get(key)
        if user is None or user.node is not None or user.connections:
            return False
        self._detached.pop(key, None)
        # Not through _remove_member: that would store the shrinking rooms as the account's
        # always-on record, which is the other node's to keep.
        for room in user.rooms.values():
            room.members.pop(user, None)
            room.members_changed()
            if not room.members and not room.registered:
                self.rooms.pop(room.name, None)
                self._forget_room_metadata(room.name)
        user.rooms.clear()
        self.users.remove(user)
        del self.by_account[key]
        return True

    def account_registered_elsewhere(self, name: str) -> None:
        """Another node created the account ``name``: its nick is protected here at once."""
        self.accounts.note_registered(name)
        user = self.users.get(name)
        if user is not None and user.node is None and user.account is None:
            self._check_enforcement(user)

    def account_revoked_elsewhere(self, name: str, reason: str) -> None:
        """Another node deleted the account ``name`` or changed its password (``reason``):
        its sessions here end too."""
        if reason == ACCOUNT_DELETED:
            self.accounts.forget_name(name)
            self._forget_blocks(name)
            self._forget_always_on(name, reason)
        self.account_revoked(name, reason, local_only=True)
