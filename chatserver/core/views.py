"""What protocols read of the core, and the rules they ask it about.

Protocols see rooms, members and users through the read-only views below.  A view is the
core's own object typed so that a protocol may read it and nothing more: nothing is copied
(looking at a room's members costs what it always did, and nothing is built per message), and
every change still goes through a :class:`ChatService` method that checks its rules.  The
records the API hands out (bans, invitations, account information) are frozen dataclasses.

The policy queries (:class:`Views`, part of ChatService) decide what protocols used to decide
each for itself: which rooms a user may see (:func:`can_see_room`, one rule on every
protocol) and whether a user may send to a room (the check ``say`` makes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred

from chatserver.core.accounts import INVITE_DAYS, RegistrationInvite
from chatserver.core.bans import ServerBan
from chatserver.core.errors import ChatError, NoSuchRoom
from chatserver.core.events import Who

# Immutable records that ChatService methods return; protocols read their types from here.
from chatserver.core.interfaces import IChatClient
from chatserver.core.names import room_key
from chatserver.core.records import BanRecord

if TYPE_CHECKING:
    from chatserver.core.accounts import AccountManager
    from chatserver.core.rooms import Member, Room
    from chatserver.core.users import Connection, NickTable, User

    # The handle ChatService.connect gives a protocol for one connection, passed back to
    # every method that acts for it.  Protocols read who it speaks for (``user``, ``account``)
    # and never change it.
    Session = Connection

__all__ = [
    "INVITE_DAYS",
    "AccountInfo",
    "BanRecord",
    "JoinResult",
    "MemberView",
    "RegistrationInvite",
    "RoomView",
    "ServerBan",
    "UserView",
    "Views",
    "can_see_room",
]


@dataclass(frozen=True, slots=True)
class JoinResult:
    """What ``ChatService.join`` did: the room, whether the join made it, and whether the
    user was in it already (then nobody was told of a join).  The joining connection gets
    the Join event too (its ``origin`` is that connection); the command's handler answers
    from this instead of reading the room again."""

    room: RoomView
    created: bool = False
    already_member: bool = False


class MemberView(Protocol):
    """A user's status in one room."""

    @property
    def op(self) -> bool: ...
    @property
    def voice(self) -> bool: ...
    def has(self, status: str | None) -> bool:
        """Whether the member ranks at least ``status`` ('op', 'voice' or None)."""
        ...

    def statuses(self) -> tuple[str, ...]: ...


class UserView(Protocol):
    """A user as others may see it: nick, identity, rooms, away state, modes."""

    @property
    def nick(self) -> str: ...
    @property
    def key(self) -> str:
        """The casefolded nick."""
        ...

    @property
    def ident(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def realname(self) -> str: ...
    @property
    def account(self) -> str | None: ...
    @property
    def away(self) -> str | None: ...
    @property
    def modes(self) -> frozenset[str]:
        """User modes by core name: 'invisible', 'wallops', 'bot', 'oper'."""
        ...

    @property
    def rooms(self) -> Mapping[str, RoomView]: ...
    @property
    def connections(self) -> Sequence[Session]: ...
    @property
    def created_at(self) -> float: ...
    @property
    def last_active(self) -> float: ...
    @property
    def secure(self) -> bool: ...
    def who(self) -> Who:
        """The snapshot events carry (cached by the core)."""
        ...

    def clients(self) -> Iterator[IChatClient]: ...


class RoomView(Protocol):
    """A room: members with their status, topic, modes, bans and invitations."""

    @property
    def name(self) -> str:
        """The canonical (casefolded) room key."""
        ...

    @property
    def created_at(self) -> float: ...
    @property
    def members(self) -> Mapping[Any, MemberView]:
        """Each member (a :class:`UserView`) with its status; read, never changed."""
        ...

    @property
    def topic(self) -> str: ...
    @property
    def topic_by(self) -> str: ...
    @property
    def topic_at(self) -> float: ...
    @property
    def flags(self) -> frozenset[str] | set[str]:
        """Flag modes by core name ('moderated', 'secret', …)."""
        ...

    @property
    def key(self) -> str | None: ...
    @property
    def limit(self) -> int | None: ...
    @property
    def bans(self) -> Sequence[BanRecord]: ...
    @property
    def invites(self) -> Sequence[str]:
        """Invite-exception masks (may join past invite-only)."""
        ...

    @property
    def registered(self) -> bool: ...
    @property
    def owner(self) -> str | None: ...
    @property
    def reg_ops(self) -> set[str] | frozenset[str]:
        """For a registered room: the accounts that get op whenever they join."""
        ...

    @property
    def reg_voices(self) -> set[str] | frozenset[str]: ...
    def member(self, user: Any) -> MemberView | None: ...
    def find_member(self, nick: str) -> UserView | None: ...
    @property
    def excepts(self) -> Sequence[str]:
        """Ban-exception masks (a ``$m:`` one exempts from mutes)."""
        ...

    def is_banned(self, who: Who) -> bool:
        """Whether a ban mask (not a mute) of the room matches ``who`` and no exception does."""
        ...

    def is_muted(self, who: Who) -> bool:
        """Whether a mute (``$m:`` ban) matches ``who`` and no mute exception does."""
        ...

    def is_invite_excepted(self, who: Who) -> bool:
        """Whether an invite-exception mask of the room matches ``who``."""
        ...

    def mode_state(self) -> list[tuple[str, str | None]]:
        """Flags and parameter modes currently set, as (name, argument), in a stable order."""
        ...


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """What anyone may learn of a registered account (never its credentials)."""

    name: str  # as registered (display form)
    created_at: float
    email: str | None = None


def can_see_room(viewer: UserView | None, room: RoomView) -> bool:
    """The one rule for secret rooms: they are seen (listed, shown in WHOIS, their members and
    modes) only by their members and by server operators; other rooms by everyone."""
    if "secret" not in room.flags:
        return True
    return viewer is not None and (viewer in room.members or "oper" in viewer.modes)


class Views:
    """The part of ChatService that protocols read through: lookups and policy queries."""

    rooms: dict[str, Room]
    users: NickTable
    accounts: AccountManager

    if TYPE_CHECKING:

        def _room(self, name: str) -> Room: ...
        def _check_send(self, room: Room, user: User, member: Member | None) -> None: ...

    # The room with the canonical key (as events carry it), or None: no folding.  The rooms
    # dict's own lookup, so that a renderer looking a room up per recipient pays no more
    # than it did reading the dict itself.
    room_by_key: Callable[[str], RoomView | None]

    def _init_views(self) -> None:
        self.room_by_key = self.rooms.get

    def can_see_room(self, viewer: UserView | None, room: RoomView) -> bool:
        return can_see_room(viewer, room)

    def visible_room(self, viewer: UserView | None, name: str) -> RoomView:
        """The room ``name`` if ``viewer`` may see it; else NoSuchRoom, as if it did not
        exist (a secret room is not revealed).  Raises BadName for an invalid name."""
        key = room_key(name)
        room = self.rooms.get(key)
        if room is None or not can_see_room(viewer, room):
            raise NoSuchRoom(key)
        return room

    def visible_rooms(self, viewer: UserView | None) -> list[RoomView]:
        """Every room ``viewer`` may see, by name."""
        return [room for _key, room in sorted(self.rooms.items()) if can_see_room(viewer, room)]

    def room_count(self) -> int:
        return len(self.rooms)

    def online_users(self) -> Iterator[UserView]:
        """Every user online (a snapshot of the nick table: safe to act while iterating)."""
        return iter(self.users)

    def user_count(self) -> int:
        return len(self.users)

    def mode_count(self, mode: str) -> int:
        """How many online users have the user mode ``mode`` (kept counted, not scanned)."""
        return self.users.mode_count(mode)

    def check_send(self, conn: Session, name: str) -> RoomView:
        """Whether the connection's user may send to the room ``name`` now (the rule ``say``
        applies); returns the room, or raises NoSuchRoom, CannotSend or ChatError."""
        user = conn.user
        if user is None:
            raise ChatError("choose a nick first")
        room = self._room(name)
        self._check_send(room, user, room.members.get(user))
        return room

    def account_info(self, name: str) -> Deferred[AccountInfo | None]:
        """Fires with the public facts of the account ``name`` (any case), or None."""
        d = self.accounts.get(name)
        return d.addCallback(
            lambda record: (
                None
                if record is None
                else AccountInfo(record.name, record.created_at, record.email)
            )
        )
