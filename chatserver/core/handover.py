"""Cluster mode: moving an account's user from one node to another without a word to its rooms.

An account's user lives on one node with all its connections.  An always-on user kept
without connections on node A, whose owner logs in on node B, is handed over: A turns its
user into a stand-in of B's (:meth:`Handover.give_user`), every other node re-homes its
stand-in (:meth:`Handover.rehome_user`), and B turns its stand-in into its own user, kept
without connections since when A last caught it up (:meth:`Handover.take_user`); the login
on B then attaches to it as to any always-on user.  The user never leaves its rooms, so
nobody sees it quit or part.  Which node asks, and when, is the cluster's business
(``chatserver.cluster``); the core only moves the user.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredList

from chatserver.core.interfaces import IChatClient
from chatserver.core.names import casefold

if TYPE_CHECKING:
    import itertools

    from chatserver.core.users import Connection, User

# What holds an account on this process (account_holding).
HELD_NOTHING = ""
# A connection speaks for it (a user with connections, or a login before a nick).
HELD_CONNECTED = "connected"
# An always-on user without connections: it can be handed over.
HELD_KEPT = "kept"


class Handover:
    """The part of ChatService that gives and takes an account's user between nodes."""

    clock: Any
    by_account: dict[str, User]
    connections: dict[int, Connection]
    _conn_ids: itertools.count[int]
    _detached: dict[str, float]
    _always_on: set[str]
    _kept_rooms: dict[str, frozenset[str]]

    if TYPE_CHECKING:

        def flush_history(self) -> Deferred: ...
        def _wait_always_on(self) -> Deferred: ...

    def account_holding(self, account: str) -> str:
        """What holds ``account`` here: HELD_CONNECTED, HELD_KEPT or HELD_NOTHING."""
        key = casefold(account)
        user = self.by_account.get(key)
        if user is not None and user.node is None:
            if user.connections or key not in self._detached:
                return HELD_CONNECTED
            return HELD_KEPT
        for conn in self.connections.values():
            # Logged in before choosing a nick: its user is made at registration.
            if conn.user is None and conn.account is not None and casefold(conn.account) == key:
                return HELD_CONNECTED
        return HELD_NOTHING

    def written(self) -> Deferred:
        """Fires once what this process holds unwritten (history, always-on records) is in
        the store: before a user is given to another node, which reads it from there."""
        return DeferredList([self.flush_history(), self._wait_always_on()], consumeErrors=True)

    def give_user(
        self, account: str, client: IChatClient, node: str
    ) -> tuple[Connection, float] | None:
        """The always-on user of ``account``, kept here without connections, is ``node``'s
        from now on: it stays in its rooms, as a stand-in (``client``) of that node's user.
        Returns the stand-in's connection and when the user was last caught up, or None
        when there is no such user here."""
        key = casefold(account)
        user = self.by_account.get(key)
        if user is None or user.node is not None or user.connections or key not in self._detached:
            return None
        from chatserver.core.users import Connection

        since = self._detached.pop(key)
        # Kept, checkpointed and saved by its new node.
        self._always_on.discard(key)
        self._kept_rooms.pop(key, None)
        conn = Connection(client, next(self._conn_ids), self.clock.seconds())
        self.connections[conn.id] = conn
        conn.user = user
        conn.account = user.account
        user.connections.append(conn)
        user.node = node
        for room in user.rooms.values():
            room.members_changed()
        return conn, since

    def rehome_user(self, conn: Connection, node: str) -> None:
        """The user of the stand-in ``conn`` was handed over to ``node``: its rooms'
        messages go there from now on (each room's cached list of nodes is made again)."""
        user = conn.user
        if user is not None:
            user.node = node
            for room in user.rooms.values():
                room.members_changed()

    def take_user(self, conn: Connection, since: float) -> User | None:
        """The user of the stand-in ``conn`` (an always-on user another node gave this one)
        is this process's, kept without connections, caught up to ``since``: the next login
        to its account attaches to it and gets what it missed."""
        user = conn.user
        if user is None or user.account is None:
            return None
        self.connections.pop(conn.id, None)
        conn.user = None
        if conn in user.connections:
            user.connections.remove(conn)
        user.node = None
        key = casefold(user.account)
        self.by_account[key] = user
        self._always_on.add(key)
        self._kept_rooms[key] = frozenset(user.rooms)
        self._detached[key] = since
        for room in user.rooms.values():
            room.members_changed()
        return user
