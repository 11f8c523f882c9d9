"""Always-on accounts: an account that opts in keeps its user while none of its connections is
open.

The user stays in the nick table with its nick (nobody else can take it) and a member of its
rooms, shown away to the others; private messages to it are kept for its next login, as for
an account nobody is using.  Its membership is written to the store whenever it changes (joins,
parts and nick changes are rare next to messages), with the time up to which it has been
given everything (when its last connection closed, or a checkpoint while one is open, so that
a crash loses it nothing), so that a restart puts it back where it was.  The next connection, on any protocol, attaches
to that user: the protocol shows the rooms as for a second client, and the core hands it what
it missed in each (:class:`MissedMessages`) and the private messages kept meanwhile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredList, fail, inlineCallbacks
from twisted.logger import Logger

from chatserver.core.errors import AccountError, ChatError
from chatserver.core.events import Away, Join, KeptRooms, MissedMessages, Presence
from chatserver.core.interfaces import IAccountSettingsStore, IClusterLink
from chatserver.core.names import casefold
from chatserver.core.records import AlwaysOnRecord
from chatserver.core.rooms import Member, Room
from chatserver.core.settings import CoreSettings

if TYPE_CHECKING:
    from chatserver.core.users import Connection, NickTable, User

# The away message others see while an always-on user has no connection; a user's own away
# message is kept instead when it set one.
AWAY_TEXT = "Not connected (always-on)"
# The most messages of one room handed to a connection that comes back (the newest); older
# ones stay in the history (IRC CHATHISTORY, MAM).
MISSED_MAX = 100


class AlwaysOn:
    """The part of ChatService that keeps always-on accounts' users."""

    log: Logger
    settings: CoreSettings
    clock: Any
    room_store: Any
    archive_store: Any
    users: NickTable
    rooms: dict[str, Room]
    by_account: dict[str, User]
    cluster: IClusterLink | None
    _stopping: bool

    if TYPE_CHECKING:

        def _user(self, conn: Connection) -> User: ...
        def cloak(self, address: str) -> str: ...
        def _send(self, clients: Any, event: Any, counts: Any = None) -> None: ...
        def _audience(self, user: User) -> list[Any]: ...
        def _observe(self, event: Any) -> None: ...
        def _deliver_offline(self, conn: Connection) -> None: ...
        def _load_recent(self, room: Room) -> Deferred: ...
        def history_after(self, room: str, ts: float, limit: int) -> Deferred: ...
        def room_archive_query(
            self,
            room: str,
            limit: int,
            *,
            after: tuple[float, str] | None = None,
            before: tuple[float, str] | None = None,
            newest: bool = True,
        ) -> Deferred: ...
        def _user_gone(self, user: User, reason: str) -> None: ...

    def _init_always_on(self) -> None:
        store = self.room_store
        # A store without account settings (a test double) has no always-on accounts.
        self.settings_store: Any = store if IAccountSettingsStore.providedBy(store) else None
        self._always_on: set[str] = set()
        # Folded account -> when its user's last connection closed, while it has none.
        self._detached: dict[str, float] = {}
        self._always_on_writes: set[Deferred] = set()
        self._checkpoint_call: Any = None
        # Folded account -> the room keys last told to observers (KeptRooms).
        self._kept_rooms: dict[str, frozenset[str]] = {}

    def is_always_on(self, account: str | None) -> bool:
        return account is not None and casefold(account) in self._always_on

    def set_always_on(self, conn: Connection, on: bool) -> Deferred:
        """Turn always-on on or off for the connection's account; fires with ``on``."""
        try:
            user = self._user(conn)
            if user.account is None:
                raise AccountError(AccountError.NOT_LOGGED_IN, "log in to an account first")
            if self.settings_store is None:
                raise ChatError("this server keeps no always-on accounts")
        except ChatError as err:
            return fail(err)
        key = casefold(user.account)
        if on:
            self._always_on.add(key)
            self._rooms_kept(user)
            d = self._save_always_on(user)
        else:
            self._always_on.discard(key)
            self._kept_rooms.pop(key, None)
            d = self._track(self.settings_store.delete_always_on(key))
        return d.addCallback(lambda _: on)

    # -- the store ---------------------------------------------------------------------------

    def _track(self, d: Deferred) -> Deferred:
        """Keep ``d`` until it fires, so that shutdown can wait for the write."""
        self._always_on_writes.add(d)

        def done(result: Any) -> Any:
            self._always_on_writes.discard(d)
            return result

        return d.addBoth(done)

    def _save_always_on(self, user: User) -> Deferred:
        assert user.account is not None
        key = casefold(user.account)
        # While a client is connected the user is given everything as it is said: it has
        # seen all up to now (a crash must not make what it never got count as seen).
        last_seen = self._detached.get(key)
        record = AlwaysOnRecord(
            key,
            user.nick,
            user.ident,
            user.host,
            user.realname,
            rooms=tuple(user.rooms),
            last_seen=self.clock.seconds() if last_seen is None else last_seen,
        )
        return self._track(self.settings_store.save_always_on(record))

    def _rooms_kept(self, user: User) -> None:
        """Tell observers which rooms the always-on ``user`` joined and left since they were
        last told."""
        assert user.account is not None
        key = casefold(user.account)
        now = frozenset(user.rooms)
        before = self._kept_rooms.get(key, frozenset())
        if now == before:
            return
        self._kept_rooms[key] = now
        self._observe(
            KeptRooms(
                ts=self.clock.seconds(),
                account=user.account,
                nick=user.nick,
                joined=tuple(name for name in user.rooms if name not in before),
                left=tuple(sorted(before - now)),
            )
        )

    def _always_on_changed(self, user: User) -> None:
        """A user's nick or rooms changed: keep them, if it is always-on."""
        if self._always_on and self.is_always_on(user.account):
            self._rooms_kept(user)
            d = self._save_always_on(user)
            d.addErrback(lambda f: self.log.failure("saving always-on {a}", f, a=user.account))

    def _checkpoint(self) -> None:
        """Write, for every always-on user with a connection, that it has been given
        everything up to now; then again after ``always_on_checkpoint`` seconds.  A stop
        writes the same for everyone; this bounds what a crash (which writes nothing) makes
        the next client get twice, and loses it nothing."""
        self._checkpoint_call = self.clock.callLater(
            self.settings.always_on_checkpoint, self._checkpoint
        )
        connected = [
            key
            for key in self._always_on
            if key not in self._detached
            and (user := self.by_account.get(key)) is not None
            and user.connections
        ]
        if connected:
            d = self._track(self.settings_store.touch_always_on(connected, self.clock.seconds()))
            d.addErrback(lambda f: self.log.failure("always-on checkpoint", f))

    def _wait_always_on(self) -> Deferred:
        """Fires when every always-on write has (shutdown waits for them)."""
        return DeferredList(list(self._always_on_writes), consumeErrors=True)

    def missed_since(self, conn: Connection) -> float | None:
        """When the always-on user that ``conn`` brought back was last caught up (None if
        the user had a connection already): what was said in its rooms after it comes as
        :class:`MissedMessages`, so a protocol that replays a room's recent messages replays
        only those from before, and shows each message once."""
        return conn.resumed_since

    # -- losing and finding connections ------------------------------------------------------

    def _keep_detached(self, user: User) -> bool:
        """The last connection of ``user`` closed: keep it if it is always-on (shown away,
        still in its rooms) and say so."""
        if not self.is_always_on(user.account):
            return False
        assert user.account is not None
        if self._stopping:
            # Saved once for everyone by _stop_always_on.
            return True
        now = self.clock.seconds()
        self._detached[casefold(user.account)] = now
        if user.away is None:
            user.away = AWAY_TEXT
            user.changed()
            event = Away(ts=now, who=user.who(), message=AWAY_TEXT)
            self._send(self._audience(user), event)
            self._observe(event)
            if self.cluster is not None and user.node is None:
                self.cluster.local_event(event)
        d = self._save_always_on(user)
        d.addErrback(lambda f: self.log.failure("saving always-on {a}", f, a=user.account))
        return True

    def _resume(self, conn: Connection, user: User) -> None:
        """``conn`` attached to ``user``: if the user was kept without connections, it is back
        (no longer away) and the connection gets what it missed; in any case it gets the
        account's offline messages."""
        if user.account is None:
            return
        since = self._detached.pop(casefold(user.account), None) if self._detached else None
        if since is None:
            # A second connection of a user that is online: what was kept for the account
            # meanwhile (a session of it ended before acknowledging messages) comes now.
            self._deliver_offline(conn)
            return
        conn.resumed_since = since
        if user.away == AWAY_TEXT:
            user.away = None
            user.changed()
            event = Away(ts=self.clock.seconds(), who=user.who(), message=None)
            self._send([c for c in self._audience(user) if c is not conn.client], event)
            self._observe(event)
            if self.cluster is not None and user.node is None:
                self.cluster.local_event(event)
        d = self._save_always_on(user)
        d.addErrback(lambda f: self.log.failure("saving always-on {a}", f, a=user.account))
        self._deliver_offline(conn)
        for name in list(user.rooms):
            self._give_missed(conn, name, since)

    def _give_missed(self, conn: Connection, room: str, since: float) -> None:
        held = self.rooms.get(room)
        # What this process holds of the room as the connection comes back: what is added
        # to it from now on reaches the connection live.
        before = tuple(held.history) if held is not None else ()

        def give(messages: list[Any]) -> None:
            messages = self._exactly_missed(room, since, messages, before)
            if messages and conn.user is not None and room in conn.user.rooms:
                event = MissedMessages(
                    ts=self.clock.seconds(), room=room, since=since, messages=tuple(messages)
                )
                self._send((conn.client,), event)

        if self.archive_store is not None:
            # The newest of them, when there are more: what was said last matters most.
            d = self.room_archive_query(room, MISSED_MAX, after=(since, "\uffff"), newest=True)
        else:
            d = self.history_after(room, since, MISSED_MAX)
        d.addCallback(give)
        d.addErrback(lambda f: self.log.failure("missed messages of {r}", f, r=room))

    def _exactly_missed(
        self, room: str, since: float, stored: list[Any], before: tuple[Any, ...]
    ) -> list[Any]:
        """The messages of ``room`` after ``since`` that a returning connection did not get
        live: ``stored`` (the store's, read after it came back) less those that reached it
        live meanwhile, with those held here when it came back (``before``) that the store
        did not have yet.  In cluster mode another node writes its own users' messages a
        write interval after they were said, and one said just before the connection came
        back may reach this node after it did, and the store before it was read; each is
        shown once, either way."""
        held = self.rooms.get(room)
        earlier = {msg.id for msg in before}
        live = {msg.id for msg in held.history if msg.id not in earlier} if held else set()
        found = [msg for msg in stored if msg.id not in live] if live else stored
        known = {msg.id for msg in stored}
        unwritten = [msg for msg in before if msg.ts > since and msg.id not in known]
        if not unwritten:
            return found
        return sorted([*found, *unwritten], key=lambda msg: msg.ts)[-MISSED_MAX:]

    # -- start -------------------------------------------------------------------------------

    @inlineCallbacks
    def _load_always_on(self):
        """Put every always-on account's user back, without connections, in its rooms."""
        if self.settings_store is None:
            return 0
        records = yield self.settings_store.load_always_on()
        loading: list[Deferred] = []
        for record in records:
            self._put_back(record, loading)
        yield DeferredList(loading, consumeErrors=True)
        self._checkpoint_call = self.clock.callLater(
            self.settings.always_on_checkpoint, self._checkpoint
        )
        return len(records)

    def _put_back(self, record: AlwaysOnRecord, loading: list[Deferred]) -> User | None:
        """The always-on user of ``record`` back in its rooms, without connections; the
        loads of rooms' recent history this starts are added to ``loading``."""
        self._always_on.add(record.account)
        self._kept_rooms[record.account] = frozenset(record.rooms)
        user = self._restore(record)
        if user is None:
            return None
        for key in record.rooms:
            room = self.rooms.get(key)
            if room is None:
                room = Room(key, self.clock.seconds(), self.settings.history_in_memory)
                self.rooms[key] = room
                loading.append(self._load_recent(room))
            member = Member()
            if room.registered:
                member.op = record.account in room.reg_ops
                member.voice = record.account in room.reg_voices
            room.members[user] = member
            room.members_changed()
            user.rooms[key] = room
        return user

    @inlineCallbacks
    def restore_always_on(self, account: str):
        """Cluster mode: the node that kept the always-on user of ``account`` is gone (the
        others saw the user quit with it).  The user comes back here from the store, in its
        rooms, as at a start, and the other nodes see it come online and join them.  Fires
        with the user, or None (no such record, or a user of the account is here)."""
        if self.settings_store is None:
            return None
        key = casefold(account)
        records = yield self.settings_store.load_always_on()
        record = next((r for r in records if r.account == key), None)
        if record is None or key in self.by_account:
            return None
        loading: list[Deferred] = []
        user = self._put_back(record, loading)
        yield DeferredList(loading, consumeErrors=True)
        if user is None:
            return None
        # Everyone saw it quit with its node: it is shown coming back, here and elsewhere.
        now = self.clock.seconds()
        who = user.who()
        online = Presence(ts=now, who=who, online=True)
        if self.cluster is not None:
            self.cluster.local_event(online)
        self._observe(online)
        for room in user.rooms.values():
            join = Join(ts=now, room=room.name, who=who)
            if self.cluster is not None:
                self.cluster.local_event(join)
            self._send(room.clients(), join)
        return user

    def _restore(self, record: AlwaysOnRecord) -> User | None:
        from chatserver.core.users import User

        nick = record.nick
        if self.users.get(nick) is not None:
            nick = record.name
            if self.users.get(nick) is not None:
                self.log.warn("always-on {a}: no nick free to restore", a=record.name)
                return None
        now = self.clock.seconds()
        user = User(nick, ident=record.ident, host=record.host, realname=record.realname, now=now)
        user.account = record.name
        user.away = AWAY_TEXT
        self.users.add(user)
        self.by_account[record.account] = user
        self._detached[record.account] = record.last_seen if record.last_seen is not None else now
        return user

    def _forget_always_on(self, account: str, reason: str) -> None:
        """The account is gone: its setting goes with it (the store's rows go with the
        account), and a user kept without connections leaves."""
        key = casefold(account)
        self._always_on.discard(key)
        self._kept_rooms.pop(key, None)
        self._drop_detached(key, reason)

    def _drop_detached(self, key: str, reason: str) -> None:
        """The user of the folded account ``key``, if kept without connections, quits."""
        if self._detached.pop(key, None) is None:
            return
        user = self.by_account.get(key)
        if user is not None and not user.connections:
            self._user_gone(user, reason)

    def _stop_always_on(self) -> Deferred:
        """At shutdown: every always-on user is kept as of now (its connections are closing),
        so that the next start knows from when it missed messages."""
        if self._checkpoint_call is not None and self._checkpoint_call.active():
            self._checkpoint_call.cancel()
        now = self.clock.seconds()
        for key in self._always_on:
            user = self.by_account.get(key)
            if user is not None and key not in self._detached:
                self._detached[key] = now
                self._save_always_on(user).addErrback(
                    lambda f: self.log.failure("saving always-on at shutdown", f)
                )
        return self._wait_always_on()
