"""Identity: accounts (registration, login, logout) and nick enforcement.

A user's identity is a guest or an account.  Logging in attaches a connection to the
account's user (one user, several connections); a nick that is an account, held by a session
that is not logged in to it, is enforced: the holder is renamed to a guest nick.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.logger import Logger

from chatserver.core.accounts import INVITE_DAYS, AccountManager
from chatserver.core.errors import AccountError, BadName, ChatError, NickReserved, NotPermitted
from chatserver.core.events import (
    ACCOUNT_DELETED,
    PASSWORD_CHANGED,
    AccountChange,
    Event,
    Join,
    NickChange,
    Part,
    Who,
    who_of,
)
from chatserver.core.interfaces import IChatClient, IClusterLink
from chatserver.core.limits import AddressSet, KeyedBuckets
from chatserver.core.names import casefold, reserved_reason
from chatserver.core.settings import CoreSettings

if TYPE_CHECKING:
    from chatserver.core.users import Connection, NickTable, User

# Seconds between two lookups of newly taken nicks in the store (see _check_nicks): how late
# a nick that another process has just registered can be noticed, at most.
NICK_CHECK_REST = 0.05


class Identity:
    """The part of ChatService that logs connections in and enforces registered nicks."""

    log: Logger
    settings: CoreSettings
    clock: Any
    accounts: AccountManager
    users: NickTable
    by_account: dict[str, User]
    connections: dict[int, Connection]
    logins_by_protocol: dict[str, int]
    cluster: IClusterLink | None
    _limit_exempt: AddressSet
    # Set when the server begins to stop: the store is closed soon after.
    _stopping: bool
    _end_of_turn: Callable[[Callable[[], None]], object] | None

    if TYPE_CHECKING:

        def _user(self, conn: Connection) -> User: ...
        def _attach(self, conn: Connection, user: User) -> None: ...
        def _detach(self, conn: Connection) -> User | None: ...
        def _rename_user(
            self, user: User, new_nick: str, origin: IChatClient | None = None
        ) -> None: ...
        def _user_gone(self, user: User, reason: str) -> None: ...
        def _deliver_offline(self, conn: Connection) -> None: ...
        def _end_connections(self, conns: Iterable[Connection], reason: str) -> list[str]: ...
        def _audience(self, user: User) -> list[IChatClient]: ...
        def notice_user(self, user: User, text: str) -> None: ...
        def _refuse_if_banned(
            self, conn: Connection, *, nick: str | None, ident: str | None, account: str | None
        ) -> None: ...
        def _take_arrival(self, arrival: dict[str, Any]) -> str: ...
        def _arrival_ready(self, key: str) -> Deferred[None]: ...
        def _arrival_done(self, key: str, reason: str | None = None) -> None: ...
        def _send(
            self,
            clients: Iterable[IChatClient],
            event: Event,
            fanout: Sequence[tuple[str, int]] | None = None,
            *,
            flush: bool = True,
        ) -> None: ...
        def _observe(self, event: Event) -> None: ...

    def _init_identity(self) -> None:
        # New accounts per address (line and IRC registration, XMPP in-band registration).
        self._registrations = KeyedBuckets(
            self.settings.registration_burst, 1.0 / self.settings.registration_period
        )
        # Nicks just taken, to look up in the store at the end of the turn (enforcement).
        self._nicks_to_check: dict[User, str] = {}
        self._nick_check_scheduled = False
        # A lookup is on its way to the store: nicks taken meanwhile wait for it to end.
        self._nick_check_running = False

    # -- accounts --------------------------------------------------------------------------

    def take_registration(self, address: str) -> bool:
        """Whether ``address`` may create one more account now; counts it if so."""
        if address in self._limit_exempt:
            return True
        return self._registrations.take(address, self.clock.seconds())

    def register(
        self, conn: Connection, password: str, email: str | None = None, *, name: str = ""
    ) -> Deferred:
        """Register the connection's nick as an account and log in to it.

        Before the connection has a nick, ``name`` is the nick it asks for: one that someone
        is using cannot be registered from under them.
        """
        try:
            if conn.user is None and name:
                if conn.account is not None:
                    raise AccountError(
                        AccountError.ALREADY_LOGGED_IN,
                        f"you are already logged in as {conn.account}",
                    )
                if self.users.get(name) is not None:
                    raise AccountError(AccountError.EXISTS, f"{name} is in use")
                nick = name
            else:
                user = self._user(conn)
                if user.account is not None:
                    raise AccountError(
                        AccountError.ALREADY_LOGGED_IN,
                        f"you are already logged in as {user.account}",
                    )
                nick = user.nick
        except ChatError as err:
            return fail(err)
        d = self.register_account(
            nick, password, email, address=conn.address, protocol=conn.protocol
        )

        def created(record: Any) -> Any:
            if conn.user is not None or name:
                # Before a nick is claimed, login remembers the account for the claim.
                return self.log_in(conn, record.name).addCallback(lambda _: record)
            return record

        return d.addCallback(created)

    def register_account(
        self,
        name: str,
        password: str,
        email: str | None = None,
        *,
        address: str,
        mode: str | None = None,
        protocol: str | None = None,
    ) -> Deferred:
        """Create the account ``name`` for someone not logged in to it (XMPP in-band
        registration before authentication; :meth:`register` for a user's own nick), as the
        registration mode allows (``mode``, a protocol's own setting, else ``[chat]
        registration``) and the per-address throttle admits; fires with the AccountRecord.
        ``protocol`` names where the request came from, for the log."""
        d = self.accounts.register(
            name,
            password,
            email,
            mode=mode or self.settings.registration,
            admit=lambda: self.take_registration(address),
            address=address,
            protocol=protocol,
        )
        return d.addCallback(self._account_made)

    def create_account(self, name: str, password: str) -> Deferred:
        """An operator creates the account ``name`` (the console): no registration mode or
        throttle applies.  Fires with the AccountRecord."""
        return self.accounts.create(name, password).addCallback(self._account_made)

    def _account_made(self, record: Any) -> Any:
        if self.cluster is not None:
            self.cluster.account_changed(record.name, None)
        return record

    def identify(self, conn: Connection, password: str, account: str | None = None) -> Deferred:
        """Check a password and log the connection in; fires with the (possibly other) User."""
        name = account or (conn.user.nick if conn.user is not None else None)
        if name is None:
            return fail(AccountError(AccountError.NO_ACCOUNT, "say which account to identify to"))
        d = self.accounts.verify_password(name, password, conn.address, conn.protocol)
        d.addCallback(lambda record: self.log_in(conn, record.name))
        d.addErrback(self._log_login_failure, conn, name)
        return d

    def invite_registration(
        self, conn: Connection, name: str, days: float = INVITE_DAYS
    ) -> Deferred:
        """A server operator lets ``name`` be registered once, by whoever asks first, within
        ``days`` (see AccountManager.invite); fires with the expiry time."""
        try:
            user = self._require_server_oper(conn)
        except ChatError as err:
            return fail(err)
        d = self.accounts.invite(name, days, invited_by=user.nick)
        return d.addCallback(lambda invite: invite.expires_at)

    def uninvite_registration(self, conn: Connection, name: str) -> Deferred:
        """A server operator withdraws the invitation of ``name``; fires True if there was one."""
        try:
            self._require_server_oper(conn)
        except ChatError as err:
            return fail(err)
        return self.accounts.uninvite(name)

    def registration_invites(self, conn: Connection) -> Deferred:
        """Fire with the unexpired RegistrationInvites, by name (server operators only)."""
        try:
            self._require_server_oper(conn)
        except ChatError as err:
            return fail(err)
        return self.accounts.invites()

    def _require_server_oper(self, conn: Connection) -> User:
        user = self._user(conn)
        if "oper" not in user.modes:
            raise NotPermitted("only server operators may do that")
        return user

    def _log_login_failure(self, failure: Any, conn: Connection, name: str) -> Any:
        failure.trap(AccountError)
        self.log.info(
            "login failed for {account} from {address} ({protocol}): {reason}",
            account=name,
            address=conn.address,
            protocol=conn.protocol,
            reason=failure.value.code,
        )
        return failure

    def log_in(
        self, conn: Connection, account: str, *, arrival: dict[str, Any] | None = None
    ) -> Deferred:
        """:meth:`login`, once the account is this process's to hold: in cluster mode its
        lease is claimed first, so that two logins to one account at the same instant on
        two nodes cannot both succeed (the other node's user, if it is an always-on user
        without connections, is handed over to this one).  Fires with what ``login``
        returns; errback AccountError when another node holds the account or the cluster
        cannot confirm it now, or what ``login`` raises.  Without a cluster it has fired
        before it returns.

        ``arrival`` (cluster mode): the connection was handed here by the node where its
        client logged in after it had a user (``departure`` there): it joins the account's
        user as that user's connection would have (see :meth:`login`)."""
        if self.cluster is None:
            try:
                return succeed(self.login(conn, account, arrival=arrival))
            except ChatError as err:
                return fail(err)
        try:
            # Refused as one process refuses it, not for the node that holds the account.
            self._check_relogin(conn, account)
        except ChatError as err:
            return fail(err)

        def claimed(_: object) -> User | None:
            if conn.id not in self.connections:
                # Closed while the claim was out: nothing to log in.
                return None
            return self.login(conn, account, arrival=arrival)

        key = self._take_arrival(arrival) if arrival is not None else None
        d = self.cluster.claim_account(account)
        if key is not None:
            d.addCallback(lambda _: self._arrival_ready(key))
        d.addCallback(claimed)
        if key is not None:
            d.addBoth(_passing(lambda: self._arrival_done(key)))
        return d

    def login(
        self, conn: Connection, account: str, *, arrival: dict[str, Any] | None = None
    ) -> User | None:
        """Log a connection in to ``account`` (its credentials already checked).

        Before a nick is claimed this only remembers the account.  If another user is already
        online for the account, this connection moves to that user (one user, several
        connections): it is shown leaving its old rooms, its nick changing, and the rooms of
        the account's user; its old user quits if it has no other connection.

        A user logged in to another account switches accounts (re-authentication) only when
        this is its one connection: the others have not proven the new account, so with them
        it raises AccountError(ALREADY_LOGGED_IN).

        ``arrival``: the connection's user was on another node, which has made it quit
        already (``handed_off``); the connection moves to the account's user here as above,
        shown leaving the rooms and nick the arrival names.  AccountError(UNAVAILABLE) if
        that user is no longer here.
        """
        self.log.info(
            "login {account} from {address} ({protocol})",
            account=account,
            address=conn.address,
            protocol=conn.protocol,
        )
        user = conn.user
        self._check_relogin(conn, account)
        before = who_of(arrival["who"]) if arrival is not None else user
        self._refuse_if_banned(
            conn,
            nick=before.nick if before is not None else None,
            ident=before.ident if before is not None else None,
            account=account,
        )
        self._refuse_if_elsewhere(self.by_account.get(casefold(account)), user)
        if arrival is not None:
            existing = self.by_account.get(casefold(account))
            if existing is None or existing.node is not None:
                raise AccountError(
                    AccountError.UNAVAILABLE,
                    f"{account} left this server while you were logging in; log in again",
                )
        self.accounts.note_registered(account)
        protocol = conn.protocol
        self.logins_by_protocol[protocol] = self.logins_by_protocol.get(protocol, 0) + 1
        if arrival is not None:
            assert existing is not None
            self._show_moved(conn, who_of(arrival["who"]), arrival["rooms"], existing)
            # Its old user (a stand-in here, its quit on the way or come) goes now, as on one
            # process: those in its rooms, this client among them, see it quit.
            self._arrival_done(casefold(arrival["who"]["n"]), moved_reason(existing.nick))
            return existing
        if user is None:
            conn.account = account
            return None
        key = casefold(account)
        if user.account is not None and casefold(user.account) == key:
            return user
        existing = self.by_account.get(key)
        if existing is not None and existing is not user:
            self._move_connection(conn, existing)
            return existing
        previous = user.account
        if previous is not None and self.by_account.get(casefold(previous)) is user:
            del self.by_account[casefold(previous)]
        user.account = account
        user.changed()
        self.by_account[key] = user
        event = AccountChange(
            ts=self.clock.seconds(), who=user.who(), account=account, previous=previous
        )
        if self.cluster is not None and user.node is None:
            self.cluster.local_event(event)
        self._send(self._audience(user), event)
        # Notify lists (IRC extended-monitor, XMPP rosters) follow users and accounts they
        # share no room with.
        self._observe(event)
        conn.account = account
        self._deliver_offline(conn)
        if previous is not None:
            # The nick was the previous account's: it may be someone else's now.
            self._check_enforcement(user)
        elif key == user.key and user.enforce_timer is not None:
            if user.enforce_timer.active():
                user.enforce_timer.cancel()
            user.enforce_timer = None
        return user

    def _check_relogin(self, conn: Connection, account: str) -> None:
        """A user logged in on several connections may not switch accounts from one: the
        others have not proven the new account (AccountError)."""
        user = conn.user
        if (
            user is not None
            and user.account is not None
            and casefold(user.account) != casefold(account)
            and len(user.connections) > 1
        ):
            raise AccountError(
                AccountError.ALREADY_LOGGED_IN,
                f"you are logged in as {user.account} on other connections too",
            )

    def _refuse_if_elsewhere(self, existing: User | None, user: User | None) -> None:
        """Cluster mode: an account's user is on one node, with every connection of it; a
        login to it on another node is refused (AccountError) while it is there."""
        if (
            existing is not None
            and existing.node is not None
            and existing is not user
            and (user is None or user.node is None)
        ):
            raise elsewhere(existing.account or "", existing.node)

    def _move_connection(self, conn: Connection, target: User) -> None:
        old = self._detach(conn)
        assert old is not None
        self._show_moved(conn, old.who(), [room.name for room in old.rooms.values()], target)
        if not old.connections:
            self._user_gone(old, moved_reason(target.nick))

    def _show_moved(self, conn: Connection, old: Who, rooms: Iterable[str], target: User) -> None:
        """Attach ``conn``, which left the user ``old`` (in ``rooms``), to ``target``: its
        client is shown leaving those rooms, its nick changing, and the rooms of ``target``."""
        now = self.clock.seconds()
        for room in rooms:
            self._send((conn.client,), Part(ts=now, room=room, who=old, reason="logged in"))
        if old.nick != target.nick:
            self._send((conn.client,), NickChange(ts=now, who=old, new_nick=target.nick))
        conn.account = target.account
        self._attach(conn, target)
        target_who = target.who()
        for joined in target.rooms.values():
            self._send((conn.client,), Join(ts=now, room=joined.name, who=target_who))

    def logout(self, conn: Connection) -> None:
        user = self._user(conn)
        if user.account is None:
            raise AccountError(AccountError.NOT_LOGGED_IN, "you are not logged in")
        self._logout_user(user)

    def _logout_user(self, user: User) -> None:
        previous = user.account
        if self.by_account.get(casefold(previous or "")) is user:
            del self.by_account[casefold(previous or "")]
        user.account = None
        user.changed()
        for conn in user.connections:
            conn.account = None
        event = AccountChange(
            ts=self.clock.seconds(), who=user.who(), account=None, previous=previous
        )
        if self.cluster is not None and user.node is None:
            self.cluster.local_event(event)
        self._send(self._audience(user), event)
        self._observe(event)
        self._check_enforcement(user)

    @inlineCallbacks
    def change_password(self, conn: Connection, old_password: str, new_password: str):
        """The owner changes the password: the account's other sessions are ended (they
        proved the old one), this one stays."""
        user = self._user(conn)
        if user.account is None:
            raise AccountError(AccountError.NOT_LOGGED_IN, "log in to change your password")
        account = user.account
        self.accounts.check_password_rules(new_password)
        yield self.accounts.verify_password(account, old_password, conn.address, conn.protocol)
        yield self.set_account_password(account, new_password, keep=conn)

    @inlineCallbacks
    def set_account_password(self, name: str, password: str, *, keep: Connection | None = None):
        """Set the password of ``name`` (errback AccountError if there is no such account) and
        end every session of the account but ``keep``."""
        yield self.accounts.set_password(name, password)
        if self.cluster is not None:
            self.cluster.account_changed(name, PASSWORD_CHANGED)
        self.account_revoked(name, PASSWORD_CHANGED, keep=keep)

    @inlineCallbacks
    def drop(self, conn: Connection, password: str):
        """Delete the logged-in account (after checking its password)."""
        user = self._user(conn)
        if user.account is None:
            raise AccountError(AccountError.NOT_LOGGED_IN, "log in to drop your account")
        account = user.account
        yield self.accounts.verify_password(account, password, conn.address, conn.protocol)
        yield self.delete_account(account, requester=conn)

    @inlineCallbacks
    def delete_account(self, name: str, *, requester: Connection | None = None):
        """Delete the account ``name``; fires True if it existed.  Every session of the account
        is ended; the ``requester``'s own (a user dropping their account) only at the end of the
        turn, once the protocol has told it the account is gone."""
        existed = yield self.accounts.delete(name)
        if existed:
            if self.cluster is not None:
                self.cluster.account_changed(name, ACCOUNT_DELETED)
            self._forget_blocks(name)  # type: ignore[attr-defined]
            self._forget_always_on(name, ACCOUNT_DELETED)  # type: ignore[attr-defined]
            self.account_revoked(name, ACCOUNT_DELETED, keep=requester)
            if requester is not None:
                self.clock.callLater(0, self._end_connections, (requester,), ACCOUNT_DELETED)
        return existed

    def account_revoked(
        self,
        account: str,
        reason: str,
        *,
        keep: Connection | None = None,
        local_only: bool = False,
    ) -> list[str]:
        """End every live session of ``account`` at once, with ``reason``: the account was
        deleted or its password changed.  Every connection logged in to it, or that proved it
        before choosing a nick, is disconnected (as Ergo does when an account goes), except
        ``keep``.  Returns the nicks disconnected.

        This is the one place a revocation acts on sessions: a cluster backend publishes the
        call to every node, and each runs it on its own connections.
        """
        key = casefold(account)
        doomed = [
            c
            for c in self.connections.values()
            if c is not keep
            and casefold(_account_of(c) or "") == key
            # Another node's user (cluster mode) is ended there, by its own node.
            and not (local_only and c.user is not None and c.user.node is not None)
        ]
        if not doomed:
            return []
        gone = self._end_connections(doomed, reason)
        self.log.info(
            "sessions of {account} ended ({reason}): {nicks}",
            account=account,
            reason=reason,
            nicks=" ".join(gone) or "-",
        )
        return gone

    # -- nick enforcement ------------------------------------------------------------------

    def _check_claim(self, nick: str, account: str | None) -> None:
        """Raise unless a session logged in to ``account`` (None: not logged in) may take
        ``nick`` as far as names go: BadName for a reserved name, NickReserved for another
        account's nick when enforcement is strict."""
        key = casefold(nick)
        if account is not None and casefold(account) == key:
            return
        reason = reserved_reason(nick, self.settings.guest_prefix)
        if reason is not None:
            raise BadName(nick, reason)
        if self.settings.nick_enforcement == "strict" and self.accounts.is_registered(key):
            # Asked again in the background, so that an account that another process has
            # deleted frees its nick by the next try.
            if not self._stopping:
                d = self.accounts.registered_keys([key])
                d.addErrback(self._nick_check_failed, "checking the nick {key}", key=key)
            raise NickReserved(nick)

    def _check_enforcement(self, user: User) -> None:
        if user.node is not None:
            # A user of another node: that node enforces its nick.
            return
        if user.enforce_timer is not None:
            if user.enforce_timer.active():
                user.enforce_timer.cancel()
            user.enforce_timer = None
        if user.account is not None and casefold(user.account) == user.key:
            return
        if self._stopping:
            # Every connection is being closed, and the store with them: nothing to enforce.
            return
        if self.settings.nick_enforcement == "strict" and self.accounts.is_registered(user.key):
            # Logged out while on the account's nick: a guest from now on.
            self._to_guest(user, f"{user.nick} is a registered nick")
            return
        if self.cluster is None and not self.accounts.is_registered(user.key):
            # One process: every account is made and deleted through it (the account
            # command goes through the running server), so a nick not among the names it
            # knows is no account, and the store has nothing to add.  In cluster mode another
            # node may have registered it since: the shared store is asked.
            return
        # Checked together with every other nick taken in this reactor turn: one trip to the
        # store's thread for a burst of new connections, not one each.
        self._nicks_to_check[user] = user.key
        if self._end_of_turn is None:
            self._check_nicks()
        elif not self._nick_check_scheduled:
            self._nick_check_scheduled = True
            self._end_of_turn(self._check_nicks)

    def _check_nicks(self) -> None:
        self._nick_check_scheduled = False
        if self._nick_check_running:
            # One lookup at a time: under a burst of registrations, those taken while one
            # is in the store's thread go together in the next, not one trip per turn.
            return
        waiting, self._nicks_to_check = self._nicks_to_check, {}
        if not waiting or self._stopping:
            # Stopping: the users are being disconnected and the store is closing (a lookup
            # sent now would fail on the closed store).
            return
        self._nick_check_running = True
        d = self.accounts.registered_keys(list(waiting.values()))

        def found(registered: set[str]) -> None:
            if self._stopping:
                # The answer came back while the server stops: its users are gone or going.
                return
            for user, key in waiting.items():
                if key in registered:
                    self._warn_unidentified(user, key)

        d.addCallback(found)
        d.addErrback(self._nick_check_failed, "checking {n} nicks", n=len(waiting))
        d.addBoth(self._nick_check_done)

    def _nick_check_failed(self, failure: Any, what: str, **fields: Any) -> None:
        """A background nick lookup failed: logged, unless the server is stopping (the store
        is closed or closing then, and the connections the lookup was for are going away)."""
        if self._stopping:
            return
        self.log.failure(what, failure, **fields)

    def _nick_check_done(self, _: object) -> None:
        if self._stopping:
            # No next lookup: nothing more is checked once the server stops.
            self._nicks_to_check.clear()
            self._nick_check_running = False
            return
        if self._end_of_turn is None:
            # Nothing is batched (each event handled on its own): nor are the lookups.
            self._nick_check_rested()
            return
        # A short rest before the next lookup: a burst of registrations then costs the store
        # a few lookups a second, each of many nicks, rather than one per reactor turn.
        self.clock.callLater(NICK_CHECK_REST, self._nick_check_rested)

    def _nick_check_rested(self) -> None:
        self._nick_check_running = False
        if self._nicks_to_check:
            self._check_nicks()

    def _warn_unidentified(self, user: User, key: str) -> None:
        if user.key != key or self.users.get(user.nick) is not user:
            return
        if user.account is not None and casefold(user.account) == key:
            return
        if self.settings.nick_enforcement == "strict":
            # Registered by another process since this process last knew: no grace.
            self._to_guest(user, f"{user.nick} is a registered nick")
            return
        timeout = self.settings.nick_enforce_timeout
        self.notice_user(
            user,
            f"{user.nick} is a registered nick. Identify within {timeout:g} seconds"
            " or you will be renamed.",
        )
        if user.enforce_timer is None or not user.enforce_timer.active():
            user.enforce_timer = self.clock.callLater(timeout, self._enforce, user, key)

    def _enforce(self, user: User, key: str) -> None:
        user.enforce_timer = None
        if user.key != key or self.users.get(user.nick) is not user:
            return
        if user.account is not None and casefold(user.account) == key:
            return
        guest = self._guest_nick()
        self.notice_user(user, f"You did not identify for {user.nick}; your nick is now {guest}.")
        self._rename_user(user, guest)

    def collide(self, nick: str, why: str) -> None:
        """The user of this process on ``nick`` loses it (another cluster node's claim of it
        came first): it is renamed to a guest nick and told ``why``."""
        user = self.users.get(nick)
        if user is not None and user.node is None:
            self._to_guest(user, why)

    def _to_guest(self, user: User, why: str) -> None:
        guest = self._guest_nick()
        self.notice_user(user, f"{why}: your nick is now {guest}. Log in to its account to use it.")
        self._rename_user(user, guest)

    def release_nick(self, nick: str, account: str) -> bool:
        """Free ``nick`` for the owner of ``account`` (GHOST/REGAIN, an XMPP login on the nick).

        A holder not logged in to that account is renamed to a guest nick; returns whether the
        nick is now free for the account.
        """
        holder = self.users.get(nick)
        if holder is None:
            return True
        if holder.account is not None and casefold(holder.account) == casefold(account):
            return False
        guest = self._guest_nick()
        self.notice_user(
            holder, f"{holder.nick} was claimed by its owner; your nick is now {guest}."
        )
        self._rename_user(holder, guest)
        return True

    def _guest_nick(self) -> str:
        while True:
            nick = f"{self.settings.guest_prefix}{random.randint(10000, 99999)}"
            if nick not in self.users:
                return nick


def _passing(action: Callable[[], None]) -> Callable[[Any], Any]:
    """A Deferred callback that runs ``action`` and passes the result (or failure) on."""

    def run(result: Any) -> Any:
        action()
        return result

    return run


def moved_reason(nick: str) -> str:
    """What others are told of a user that quit because its connection logged in to the
    account's user ``nick``, online already."""
    return f"Logged in as {nick}"


def elsewhere(account: str, node: str) -> AccountError:
    """The refusal of a login to ``account``, whose user is on the cluster node ``node``."""
    return AccountError(
        AccountError.ALREADY_LOGGED_IN,
        f"{account} is logged in on another server of this network ({node});"
        " log out there, or connect to that server",
        node=node,
        account=account,
    )


def _account_of(conn: Connection) -> str | None:
    """The account a connection speaks for (or proved before choosing a nick)."""
    user = conn.user
    return user.account if user is not None else conn.account
