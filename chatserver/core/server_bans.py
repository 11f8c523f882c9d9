"""Server bans (K-lines) in force: the config file's and operators', and who they shut out.

Matching is in :mod:`chatserver.core.bans`; this part decides when to check (a connection
opening, a nick claimed, an account logging in, a ban added) and disconnects who matches.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from chatserver.core.bans import ServerBan, ban_matches, normalize_ban_mask
from chatserver.core.errors import Banned, ChatError, NotPermitted
from chatserver.core.interfaces import IClusterLink, IServerBanStore

if TYPE_CHECKING:
    from chatserver.core.users import Connection, User


class ServerBans:
    """The part of ChatService that keeps the server bans and applies them."""

    log: Logger
    clock: Any
    connections: dict[int, Connection]
    cluster: IClusterLink | None

    if TYPE_CHECKING:

        def _user(self, conn: Connection) -> User: ...
        def cloak(self, address: str) -> str: ...
        def quit(self, conn: Connection, reason: str = "", *, dropped: Any = None) -> None: ...
        def _end_connections(self, conns: Iterable[Connection], reason: str) -> list[str]: ...

    def _init_server_bans(self, ban_store: IServerBanStore | None) -> None:
        # From the config file (replaced on reload) and set by operators at run time (kept in
        # ``ban_store`` when there is one, else in memory only).
        self.ban_store = ban_store
        self.config_bans: tuple[ServerBan, ...] = ()
        self.runtime_bans: dict[str, ServerBan] = {}

    @inlineCallbacks
    def _load_server_bans(self):
        if self.ban_store is not None:
            for ban in (yield self.ban_store.load_server_bans()):
                self.runtime_bans[ban.mask] = ban

    @property
    def server_bans(self) -> list[ServerBan]:
        """Every server ban in force: the config's, then those set by operators."""
        return [*self.config_bans, *self.runtime_bans.values()]

    def server_ban_for(
        self,
        address: str,
        *,
        cloak: str = "",
        nick: str | None = None,
        ident: str | None = None,
        account: str | None = None,
    ) -> ServerBan | None:
        for ban in self.server_bans:
            if ban_matches(
                ban, address=address, cloak=cloak, nick=nick, ident=ident, account=account
            ):
                return ban
        return None

    def _refuse_if_banned(
        self, conn: Connection, *, nick: str | None, ident: str | None, account: str | None
    ) -> None:
        if not self.config_bans and not self.runtime_bans:
            return
        ban = self.server_ban_for(
            conn.address,
            cloak=self.cloak(conn.address),
            nick=nick,
            ident=ident,
            account=account,
        )
        if ban is None:
            return
        text = banned_text(ban)
        self.log.info(
            "banned {address} ({protocol}) by {mask}",
            address=conn.address,
            protocol=conn.protocol,
            mask=ban.mask,
        )
        try:
            conn.client.disconnect(text)
        except Exception:
            self.log.failure("disconnecting {conn}", conn=conn)
        raise Banned(text, ban.mask)

    def set_config_bans(self, bans: Iterable[ServerBan]) -> list[str]:
        """Replace the config file's bans (at start and on reload); returns the nicks of the
        users disconnected because a ban now matches them."""
        self.config_bans = tuple(bans)
        return self._enforce_bans()

    def add_server_ban(
        self, conn: Connection, mask: str, reason: str
    ) -> tuple[ServerBan, list[str]]:
        """An operator bans ``mask`` from the server (stored when the store can); users it
        matches are disconnected.  Returns the ban and their nicks."""
        actor = self._user(conn)
        if "oper" not in actor.modes:
            raise NotPermitted("only server operators may do that")
        return self.ban(mask, reason, by=actor.nick)

    def ban(self, mask: str, reason: str, *, by: str) -> tuple[ServerBan, list[str]]:
        """Ban ``mask`` from the server in the name of ``by`` (a K-line); matching users are
        disconnected with the reason.  Returns the ban and their nicks.  Raises BadName.

        A ban reaches every node of a cluster as itself (each node enforces the bans it
        holds on its own connections), not as a list of sessions to end.
        """
        ban = ServerBan(normalize_ban_mask(mask), reason.strip(), by, self.clock.seconds())
        self.runtime_bans[ban.mask] = ban
        if self.ban_store is not None:
            d = self.ban_store.save_server_ban(ban)
            d.addErrback(lambda f: self.log.failure("saving the ban {mask}", f, mask=ban.mask))
        self.log.info("{oper} banned {mask}: {reason}", oper=by, mask=ban.mask, reason=ban.reason)
        if self.cluster is not None:
            self.cluster.server_ban_changed(ban, False)
        return ban, self._enforce_bans()

    def ban_elsewhere(self, ban: ServerBan) -> list[str]:
        """Another node of a cluster set ``ban`` (and stored it): it holds here too, on this
        process's connections; returns the nicks disconnected."""
        self.runtime_bans[ban.mask] = ban
        self.log.info("{oper} banned {mask} on another node", oper=ban.set_by, mask=ban.mask)
        return self._enforce_bans()

    def unban_elsewhere(self, mask: str) -> None:
        """Another node of a cluster lifted the ban on ``mask``."""
        if self.runtime_bans.pop(mask, None) is not None:
            self.log.info("the ban on {mask} was lifted on another node", mask=mask)

    def remove_server_ban(self, conn: Connection, mask: str) -> ServerBan:
        """An operator lifts a ban set at run time (config bans are lifted in the config)."""
        actor = self._user(conn)
        if "oper" not in actor.modes:
            raise NotPermitted("only server operators may do that")
        return self.unban(mask, by=actor.nick)

    def unban(self, mask: str, *, by: str) -> ServerBan:
        """Lift the ban on ``mask`` set at run time; raises ChatError if there is none (or it
        comes from the configuration file)."""
        key = normalize_ban_mask(mask)
        ban = self.runtime_bans.pop(key, None)
        if ban is None:
            if any(b.mask == key for b in self.config_bans):
                raise ChatError(f"{key} is set in the configuration file: remove it there")
            raise ChatError(f"no server ban on {key}")
        if self.ban_store is not None:
            d = self.ban_store.delete_server_ban(key)
            d.addErrback(lambda f: self.log.failure("deleting the ban {mask}", f, mask=key))
        self.log.info("{oper} lifted the ban on {mask}", oper=by, mask=key)
        if self.cluster is not None:
            self.cluster.server_ban_changed(ban, True)
        return ban

    def _enforce_bans(self) -> list[str]:
        gone: list[str] = []
        for conn in list(self.connections.values()):
            user = conn.user
            if user is not None and "oper" in user.modes:
                # An operator is never locked out by a mistyped mask; they can lift it.
                continue
            if user is not None and user.node is not None:
                # A user of another node of a cluster: that node holds the ban too.
                continue
            ban = self.server_ban_for(
                conn.address,
                cloak=user.host if user is not None else "",
                nick=user.nick if user is not None else None,
                ident=user.ident if user is not None else None,
                account=user.account if user is not None else conn.account,
            )
            if ban is None:
                continue
            for nick in self._end_connections((conn,), banned_text(ban)):
                if nick not in gone:
                    gone.append(nick)
        return gone


def banned_text(ban: ServerBan) -> str:
    return "You are banned from this server" + (f": {ban.reason}" if ban.reason else "")
