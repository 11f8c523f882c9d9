"""Users, their connections, and the nick table.

A user is one nick with one identity (guest or account) and one set of rooms; it has one
or more connections.  Rooms hold users, not connections: an event for a user reaches every
one of its connections.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from chatserver.core.events import Who
from chatserver.core.interfaces import IChatClient
from chatserver.core.limits import canonical_address
from chatserver.core.names import casefold

if TYPE_CHECKING:
    from chatserver.core.rooms import Room


class Connection:
    """One attached IChatClient, and who it speaks for (``user`` is None before a nick)."""

    __slots__ = (
        "account",
        "address",
        "client",
        "connected_at",
        "id",
        "last_active",
        "protocol",
        "resumed_since",
        "user",
    )

    def __init__(self, client: IChatClient, conn_id: int, now: float) -> None:
        self.client = client
        self.id = conn_id
        self.protocol: str = getattr(client, "protocol", "?")
        # Canonical, so that cloaks, bans and per-address limits see one address whichever
        # protocol or listener the client came through.
        self.address: str = canonical_address(getattr(client, "address", ""))
        self.connected_at = now
        self.last_active = now
        self.user: User | None = None
        # An account proven before a nick was claimed (SASL during IRC registration, XMPP SASL).
        self.account: str | None = None
        # When its user, kept by always-on without connections, was last caught up: set when
        # this connection brought it back (what came after is handed over as missed).
        self.resumed_since: float | None = None

    @property
    def secure(self) -> bool:
        return bool(getattr(self.client, "secure", False))

    def __repr__(self) -> str:
        nick = self.user.nick if self.user else None
        return f"<Connection {self.id} {self.protocol} {nick}>"


class User:
    """A nick, its identity, its rooms, its away state and its connections."""

    __slots__ = (
        "__weakref__",
        "_who",
        "account",
        "away",
        "connections",
        "created_at",
        "enforce_timer",
        "host",
        "ident",
        "key",
        "last_active",
        "modes",
        "nick",
        "node",
        "realname",
        "rooms",
    )

    def __init__(self, nick: str, ident: str, host: str, realname: str, now: float) -> None:
        self.nick = nick
        self.key = casefold(nick)
        self.ident = ident
        self.host = host
        self.realname = realname
        self.account: str | None = None
        self.away: str | None = None
        self.connections: list[Connection] = []
        self.rooms: dict[str, Room] = {}
        # User modes by core name: 'invisible', 'wallops', 'bot', 'oper'.  Replaced, never
        # changed in place (NickTable.set_mode), so that most users share the empty one.
        self.modes: frozenset[str] = _NO_MODES
        self.created_at = now
        self.last_active = now
        self.enforce_timer: Any = None
        # The cluster node whose connections this user has (see ChatService.attach_remote);
        # None for a user of this process.
        self.node: str | None = None
        self._who: Who | None = None

    def who(self) -> Who:
        """The snapshot others see; cached until something in it changes."""
        who = self._who
        if who is None:
            who = self._who = Who(
                nick=self.nick,
                ident=self.ident,
                host=self.host,
                account=self.account,
                realname=self.realname,
                bot="bot" in self.modes,
                away=self.away,
            )
        return who

    def changed(self) -> None:
        """Forget the cached snapshot (and the rooms' cached client lists)."""
        self._who = None

    def clients(self) -> Iterator[IChatClient]:
        for conn in self.connections:
            yield conn.client

    @property
    def secure(self) -> bool:
        return all(c.secure for c in self.connections)

    def __repr__(self) -> str:
        return f"<User {self.nick}>"


_NO_MODES: frozenset[str] = frozenset()


class NickTable:
    """Online users by folded nick, with how many of them have each user mode.

    The counts are kept up to date (rather than counted when asked) because every IRC
    registration reports them (LUSERS): counting would cost a scan of every user per new
    connection.
    """

    def __init__(self) -> None:
        self._by_key: dict[str, User] = {}
        self._mode_counts: dict[str, int] = {}

    def get(self, nick: str) -> User | None:
        return self._by_key.get(casefold(nick))

    def add(self, user: User) -> None:
        self._by_key[user.key] = user
        self._count(user.modes, 1)

    def remove(self, user: User) -> None:
        if self._by_key.get(user.key) is user:
            del self._by_key[user.key]
            self._count(user.modes, -1)

    def set_mode(self, user: User, mode: str, on: bool) -> bool:
        """Give or take one of ``user``'s modes; whether it changed."""
        if (mode in user.modes) == on:
            return False
        user.modes = user.modes | {mode} if on else user.modes - {mode}
        if self._by_key.get(user.key) is user:
            self._count((mode,), 1 if on else -1)
        return True

    def mode_count(self, mode: str) -> int:
        """How many online users have ``mode``."""
        return self._mode_counts.get(mode, 0)

    def _count(self, modes: Iterable[str], delta: int) -> None:
        counts = self._mode_counts
        for mode in modes:
            counts[mode] = counts.get(mode, 0) + delta

    def rename(self, user: User, new_nick: str) -> None:
        self.remove(user)
        user.nick = new_nick
        user.key = casefold(new_nick)
        user.changed()
        self.add(user)

    def __contains__(self, nick: str) -> bool:
        return casefold(nick) in self._by_key

    def __iter__(self) -> Iterator[User]:
        return iter(list(self._by_key.values()))

    def __len__(self) -> int:
        return len(self._by_key)
