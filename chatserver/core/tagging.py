"""Tags without text: typing notices and reactions (IRC ``TAGMSG``, XMPP chat states and
reactions), to a room or to a user.

They meet the rules a message would (a room's send check, the recipient's block list), are
delivered at once to every connection concerned and are never kept: each protocol shows the
tags it has a form for and ignores the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from chatserver.core.delivery import unique_clients
from chatserver.core.errors import ChatError, NoSuchNick
from chatserver.core.events import TagMessage
from chatserver.core.interfaces import IChatClient, IClusterLink
from chatserver.core.names import casefold

if TYPE_CHECKING:
    from chatserver.core.rooms import Member, Room
    from chatserver.core.users import Connection, User


class Tagging:
    """The part of ChatService that relays tags without text."""

    clock: Any
    by_account: dict[str, User]
    cluster: IClusterLink | None

    if TYPE_CHECKING:

        def _user(self, conn: Connection) -> User: ...
        def _room(self, name: str) -> Room: ...
        def _find(self, nick: str) -> User: ...
        def _new_id(self) -> str: ...
        def _check_send(self, room: Room, user: User, member: Member | None) -> None: ...
        def _blocks_sender(self, target: Any, sender: Any) -> bool: ...
        def _send(self, clients: Any, event: Any, counts: Any = None) -> None: ...

    def send_tags(
        self,
        conn: Connection,
        tags: tuple[tuple[str, str], ...],
        *,
        room: str | None = None,
        nick: str | None = None,
        account: str | None = None,
        status: str | None = None,
        native: Any = None,
        msgid: str | None = None,
    ) -> TagMessage:
        """Relay ``tags`` to a room, a nick or the user logged in to ``account``; returns the
        TagMessage delivered.  Raises what ``say`` would for the same target.  ``msgid``:
        the id a user of another node's tags were given there (cluster mode)."""
        user = self._user(conn)
        who = user.who()
        now = self.clock.seconds()
        clients: Iterable[IChatClient]
        if room is not None:
            r = self._room(room)
            member = r.members.get(user)
            self._check_send(r, user, member)
            event = TagMessage(
                ts=now,
                id=msgid or self._new_id(),
                source=who,
                tags=tags,
                room=r.name,
                status=status,
                origin=conn.client,
                native=native,
            )
            if status is not None:
                clients = [
                    c
                    for u, m in r.members.items()
                    if m.has(status) or u is user
                    for c in u.clients()
                ]
            else:
                clients = r.clients()
            if member is None:
                clients = unique_clients(clients, user.clients())
            self._send(clients, event)
            if self.cluster is not None and user.node is None:
                self.cluster.local_event(event)
            return event
        if account is not None:
            found = self.by_account.get(casefold(account))
            if found is None:
                raise NoSuchNick(account)
            target = found
        elif nick is not None:
            target = self._find(nick)
        else:
            raise ChatError("tags need a room or a nick")
        event = TagMessage(
            ts=now,
            id=msgid or self._new_id(),
            source=who,
            tags=tags,
            target=target.nick,
            target_account=target.account,
            origin=conn.client,
            native=native,
        )
        clients = [] if self._blocks_sender(target, user) else list(target.clients())
        if target is not user:
            clients = unique_clients(clients, user.clients())
        self._send(clients, event)
        if self.cluster is not None and user.node is None:
            self.cluster.local_event(event)
        return event

    def pass_on(self, conn: Connection, native: Any, *, account: str) -> None:
        """A message only the sender's protocol has a form for (an XMPP receipt, chat
        state or error, relayed whole), for the connections of the user logged in to
        ``account`` that other processes of a cluster hold: the protocol gives it to this
        process's connections itself.  Nothing without a cluster, or when that user is
        here."""
        if self.cluster is None:
            return
        target = self.by_account.get(casefold(account))
        user = self._user(conn)
        if target is None or target.node is None or self._blocks_sender(target, user):
            return
        event = TagMessage(
            ts=self.clock.seconds(),
            id=self._new_id(),
            source=user.who(),
            tags=(),
            target=target.nick,
            target_account=target.account,
            origin=conn.client,
            native=native,
        )
        self.cluster.local_event(event)
