"""Cluster mode: a client handed to this node by another, or from this node to another.

A client that proves an account on a node other than the one holding the account's user is
*handed off* (``protocols.transport.handoff``): its socket stays where it is, and its
protocol runs on the account's node, the two joined by a relay over the cluster's streams.
The core only passes the requests between the protocols and the cluster: the protocols
register how they resume a client of their kind (``register_resumer``), the cluster opens
relays and asks for a client to be resumed here.

A client that logs in after it has a user (IRC SASL or NickServ after registration, line
chat's ``/identify`` after a nick) is handed off as well: on one process its connection would
leave its user and join the account's (``Identity.login``), so its node makes the user quit
as that does (:meth:`Relaying.handed_off`), and the node that takes the client shows it
leaving what :meth:`Relaying.departure` recorded (the state's ``arrival``, given to
``log_in``).  The user's quit reaches the taking node right behind the client: there its
stand-in is kept in its rooms until that login is done, so that the client is shown its old
user in the rooms it shares with the account's user and then its quit, as on one process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed

from chatserver.core.events import who_fields
from chatserver.core.identity import moved_reason
from chatserver.core.names import casefold

if TYPE_CHECKING:
    from chatserver.core.users import Connection, NickTable, User

# The key of a handoff state that holds what ``departure`` gave (None: a login before a user).
ARRIVAL = "arrival"
# Seconds an arrived client's login waits, at the most, for its node's quit of its old user
# (sent right behind the client; a node that dies meanwhile has its users removed anyway).
ARRIVAL_WAIT = 5.0


@dataclass(slots=True)
class _Arrival:
    """The stand-in of a user of another node whose client is handed here after a login."""

    user: User
    # Its node's quit, once it came (the stand-in stays meanwhile).
    reason: str | None = None
    # A login of the client waits for it.
    taken: bool = False
    # That login, waiting for its node's quit (:meth:`Relaying._arrival_ready`).
    waiters: list[Deferred[None]] = field(default_factory=list)


class Relaying:
    """The part of ChatService through which protocols and the cluster hand clients off."""

    cluster: Any
    clock: Any
    by_account: dict[str, User]
    users: NickTable

    if TYPE_CHECKING:

        def quit(self, conn: Connection, reason: str = "", *, dropped: Any = None) -> None: ...
        def _detach(self, conn: Connection) -> User | None: ...
        def _user_gone(self, user: User, reason: str) -> None: ...

    def _init_relaying(self) -> None:
        # kind -> resume(link, state) -> the relay's end here, or None.
        self._resumers: dict[str, Callable[[Any, dict[str, Any]], Any]] = {}
        # Casefolded nick -> a stand-in kept until its client's login here is done.
        self._arrivals: dict[str, _Arrival] = {}

    def register_resumer(self, kind: str, resumer: Callable[[Any, dict[str, Any]], Any]) -> None:
        """A protocol's factory: ``kind``'s clients handed to this node are resumed by
        ``resumer(link, state)`` (``protocols.transport.handoff.register``)."""
        self._resumers[kind] = resumer

    def open_relay(self, node: str, state: dict[str, Any], end: Any) -> Any:
        """Ask ``node`` to serve the client whose socket is here (``end`` gets what its
        protocol there writes): the link to it, or None when it cannot (no cluster, Redis
        unreachable, ``node`` not known alive)."""
        cluster = self.cluster
        if cluster is None:
            return None
        return cluster.open_relay(node, state, end)

    def resume_relay(self, link: Any, state: dict[str, Any]) -> Any:
        """The cluster: another node hands a client of ``state["kind"]`` to this one; the
        end of the relay here (which the cluster tells what the client sends), or None when
        no protocol here serves it."""
        resumer = self._resumers.get(state.get("kind", ""))
        if resumer is None:
            return None
        arrival = state.get(ARRIVAL)
        key = self._hold_arrival(arrival) if arrival is not None else None
        try:
            return resumer(link, state)
        finally:
            held = self._arrivals.get(key) if key is not None else None
            if key is not None and held is not None and not held.taken:
                # No login took it (the connection was refused here).
                self._arrival_done(key)

    def _hold_arrival(self, arrival: dict[str, Any]) -> str | None:
        user = self.users.get(arrival["who"]["n"])
        if user is None or user.node is None:
            return None
        self._arrivals[user.key] = _Arrival(user)
        return user.key

    def _take_arrival(self, arrival: dict[str, Any]) -> str:
        """A login of the client of ``arrival`` begins: its stand-in waits for it to end
        (:meth:`_arrival_done`).  Returns the key to end it with."""
        key = casefold(arrival["who"]["n"])
        held = self._arrivals.get(key)
        if held is not None:
            held.taken = True
        return key

    def _arrival_ready(self, key: str) -> Deferred[None]:
        """Fires once the stand-in held for ``key`` has lost its last connection (its node's
        quit came, right behind the client), so that the login shows the client its old
        user and then its quit, as one process does; at once if there is none to wait for."""
        held = self._arrivals.get(key)
        if held is None or held.reason is not None or not held.user.connections:
            return succeed(None)
        d: Deferred[None] = Deferred()
        held.waiters.append(d)

        def expire() -> None:
            if not d.called:
                d.callback(None)

        timer = self.clock.callLater(ARRIVAL_WAIT, expire)

        def stop(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        return d.addBoth(stop)

    def _kept_for_arrival(self, user: User, reason: str) -> bool:
        """``user`` lost its last connection (its node's quit, ``reason``): whether it stays
        for a login of its client here (:meth:`_arrival_done` ends it)."""
        held = self._arrivals.get(user.key)
        if held is None or held.user is not user:
            return False
        held.reason = reason
        waiters, held.waiters = held.waiters, []
        for d in waiters:
            if not d.called:
                d.callback(None)
        return True

    def _arrival_done(self, key: str, reason: str | None = None) -> None:
        """The login of an arrived client is done: its stand-in goes (with ``reason``, else
        its node's), or, if its node's quit has not come yet, goes when it comes."""
        held = self._arrivals.pop(key, None)
        if held is None or held.user.connections or held.reason is None:
            return
        self._user_gone(held.user, reason or held.reason)

    def departure(self, conn: Connection, account: str, node: str) -> dict[str, Any] | None:
        """What the node ``node``, which holds the user of ``account``, needs to take the
        client of ``conn`` (which has a user here and proved ``account``): its user as the
        client last saw it and its rooms, for ``log_in(..., arrival=...)`` there.  None when
        the client cannot be handed off: it has no user, its user has other connections, or
        this node does not know the account's user as ``node``'s (its login there has not
        made it yet)."""
        user = conn.user
        target = self.by_account.get(casefold(account))
        if user is None or len(user.connections) != 1 or target is None or target.node != node:
            return None
        return {"who": who_fields(user.who()), "rooms": [room.name for room in user.rooms.values()]}

    def handed_off(self, conn: Connection, account: str) -> None:
        """The client of ``conn`` is handed to the node that holds the user of ``account``,
        to log in there: this process forgets the connection without a word to it.  Its
        user, if it has one, quits as one process's user does whose last connection logs
        in to the account's user."""
        user = self._detach(conn)
        self.quit(conn, "Handed off")
        if user is not None and not user.connections:
            target = self.by_account.get(casefold(account))
            self._user_gone(user, moved_reason(target.nick if target is not None else account))
