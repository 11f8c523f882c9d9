"""Private-message archives of accounts: what is kept, offline delivery, queries, read markers
and retention.

A private message is kept in the archive of each registered end (a guest gets nothing kept),
under the id every protocol shows.  Entries go into the history write-behind (one batch
write, never a database write per message on the reactor thread).  A message to a registered
account with no connection is kept marked offline and handed to its next connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.logger import Logger

from chatserver.core.errors import ChatError, NoSuchNick, NotPermitted
from chatserver.core.events import Message, MessageKind, OfflineMessages, ReadMarker
from chatserver.core.interfaces import IAccountSettingsStore, IArchiveStore
from chatserver.core.names import casefold, check_nick, room_key
from chatserver.core.records import ArchiveEntry, ArchivePrefs, ArchiveQuery
from chatserver.core.settings import CoreSettings

if TYPE_CHECKING:
    from chatserver.core.users import Connection, NickTable, User

# The most offline messages handed to a connection at login; older ones stay in the archive.
OFFLINE_MAX = 500
DAY = 86400.0
# Seconds between retention runs; the first runs soon after start, so that a lowered
# retention applies at a restart.
EXPIRY_INTERVAL = 3600.0
EXPIRY_FIRST = 1.0
# Rows per expiry transaction (see the store's ``expire``).
EXPIRE_STEP = 2000
ARCHIVE_DEFAULTS = ("always", "never", "roster")
ALWAYS = ArchivePrefs()


class Archive:
    """The part of ChatService that keeps private messages and read positions."""

    log: Logger
    settings: CoreSettings
    clock: Any
    history_store: Any
    accounts: Any
    users: NickTable
    by_account: dict[str, User]
    _pending_private: list[ArchiveEntry]
    _stopping: bool
    store_failing: bool

    if TYPE_CHECKING:

        def _check_unstored(self) -> None: ...

        def _user(self, conn: Connection) -> User: ...
        def _new_id(self) -> str: ...
        def _schedule_flush(self) -> None: ...
        def flush_history(self) -> Deferred: ...
        def _send(self, clients: Any, event: Any, counts: Any = None) -> None: ...

    def _init_archive(self) -> None:
        store = self.history_store
        # A store without archives (a test double) keeps room history only.
        self.archive_store: Any = store if IArchiveStore.providedBy(store) else None
        self._expiry_call: Any = None
        self._expiring = False
        # Read positions of users without an account: kept for as long as the user is
        # online (nothing to keep them under after), keyed weakly by the user.
        self._session_markers: WeakKeyDictionary[Any, dict[str, float]] = WeakKeyDictionary()
        # Accounts that chose what their archive keeps (XEP-0313 preferences); the others
        # keep everything.
        self._archive_prefs: dict[str, ArchivePrefs] = {}
        # The contacts (peers, as the preferences name them) of the accounts whose default
        # is ``roster``, given by the protocol that keeps contact lists (XMPP rosters).
        self._archive_contacts: dict[str, set[str]] = {}

    @inlineCallbacks
    def _load_archive_prefs(self):
        store = self.history_store
        if self.archive_store is None or not IAccountSettingsStore.providedBy(store):
            return
        rows = yield store.load_archive_prefs()
        self._archive_prefs = {account: prefs for account, prefs in rows if prefs != ALWAYS}

    def archive_prefs(self, conn: Connection) -> ArchivePrefs:
        """What the account's archive keeps."""
        owner = self._owner(conn)
        return ALWAYS if owner is None else self._archive_prefs.get(owner, ALWAYS)

    def set_archive_prefs(
        self, conn: Connection, default: str, always: Iterable[str], never: Iterable[str]
    ) -> Deferred:
        """Choose what the account's archive keeps from now on: ``default`` ``always``,
        ``never`` or ``roster`` (the account's contacts, see :meth:`set_archive_contacts`), with
        peers (a folded account, or ``~`` and a folded nick for a guest;
        other entries are kept as given) that are always or never kept.  Fires with the
        preferences as stored."""
        try:
            owner = self._owner(conn)
            if owner is None:
                raise ChatError("log in to an account to keep an archive")
            if default not in ARCHIVE_DEFAULTS:
                raise ChatError(f"the default is one of {', '.join(ARCHIVE_DEFAULTS)}")
            store = self.history_store
            if self.archive_store is None or not IAccountSettingsStore.providedBy(store):
                raise ChatError("this server keeps no archive preferences")
        except ChatError as err:
            return fail(err)
        kept = tuple(dict.fromkeys(always))
        prefs = ArchivePrefs(default, kept, tuple(p for p in dict.fromkeys(never) if p not in kept))
        if prefs == ALWAYS:
            self._archive_prefs.pop(owner, None)
        else:
            self._archive_prefs[owner] = prefs
        if default == "roster":
            self._archive_contacts.setdefault(owner, set())
        else:
            self._archive_contacts.pop(owner, None)
        return store.save_archive_prefs(owner, prefs).addCallback(lambda _: prefs)

    def archive_keeps(self, account: str, peer_account: str | None, peer_nick: str) -> bool:
        """Whether ``account``'s archive keeps its private messages with a peer (an account,
        or a guest's nick)."""
        if not self._archive_prefs:
            return True
        prefs = self._archive_prefs.get(casefold(account))
        if prefs is None:
            return True
        peer = casefold(peer_account) if peer_account else "~" + casefold(peer_nick)
        if peer in prefs.always:
            return True
        if peer in prefs.never:
            return False
        if prefs.default == "roster":
            contacts = self._archive_contacts.get(casefold(account))
            return contacts is not None and peer in contacts
        return prefs.default == "always"

    def archive_roster_accounts(self) -> list[str]:
        """The folded accounts whose archive keeps their contacts' messages (``roster``)."""
        return [key for key, prefs in self._archive_prefs.items() if prefs.default == "roster"]

    def set_archive_contacts(self, account: str, peers: Iterable[str]) -> None:
        """``account``'s contacts, for a ``roster`` default (as XEP-0313 has it: every
        contact list entry, whatever its subscription); ``peers`` as the preferences name
        them."""
        self._archive_contacts[casefold(account)] = set(peers)

    def archive_contact(self, account: str, peer: str, present: bool) -> None:
        """A contact was added to ``account``'s list (``present``) or removed from it."""
        contacts = self._archive_contacts.get(casefold(account))
        if contacts is None:
            return
        if present:
            contacts.add(peer)
        else:
            contacts.discard(peer)

    @property
    def archives_private(self) -> bool:
        return self.archive_store is not None

    def _archive_private(self, sender: User, recipient: User, msg: Message) -> None:
        """Keep ``msg`` in the archive of each registered end this process holds (in a
        cluster each node keeps its own users' archives: only the recipient's node knows
        whether it has a connection, and its archive preferences as they are now)."""
        if self.archive_store is None:
            return
        if (
            sender.account is not None
            and sender.node is None
            and self.archive_keeps(sender.account, recipient.account, recipient.nick)
        ):
            self._pending_private.append(ArchiveEntry(casefold(sender.account), recipient.key, msg))
        if recipient.account is not None and recipient.node is None and recipient is not sender:
            # An always-on user with no connection open gets it at its next login: kept
            # whatever the preferences say, since the archive is where it waits.
            offline = not recipient.connections
            if offline or self.archive_keeps(recipient.account, sender.account, sender.nick):
                self._pending_private.append(
                    ArchiveEntry(casefold(recipient.account), sender.key, msg, offline=offline)
                )
        self._schedule_flush()

    @inlineCallbacks
    def say_offline(
        self,
        conn: Connection,
        *,
        nick: str,
        text: str,
        kind: MessageKind = "privmsg",
        tags: tuple[tuple[str, str], ...] = (),
        native: Any = None,
    ):
        """Send a private message to the account ``nick`` when nobody is logged in to it: it
        is kept for the account and reaches its next connection.  Fires with the Message;
        errbacks NoSuchNick when ``nick`` is not a registered account."""
        user = self._user(conn)
        if not text:
            raise ChatError("no text to send")
        check_nick(nick)
        if self.archive_store is None or kind == "notice":
            # Notices are never answered automatically, nor kept for later (RFC 2812 3.3.2).
            raise NoSuchNick(nick)
        record = yield self.accounts.get(nick)
        if record is None:
            raise NoSuchNick(nick)
        if self.by_account.get(casefold(record.name)) is not None:
            # Someone logged in to it meanwhile: delivered as usual.
            return self.say(  # type: ignore[attr-defined]
                conn, text=text, account=record.name, kind=kind, tags=tags, native=native
            )
        if self.store_failing:
            self._check_unstored()
        now = self.clock.seconds()
        msg = Message(
            ts=now,
            id=self._new_id(),
            source=user.who(),
            text=text,
            kind=kind,
            target=record.name,
            target_account=record.name,
            tags=tags,
            origin=conn.client,
            native=native,
        )
        if user.account is not None and self.archive_keeps(user.account, record.name, record.name):
            self._pending_private.append(
                ArchiveEntry(casefold(user.account), casefold(record.name), msg)
            )
        self._pending_private.append(
            ArchiveEntry(casefold(record.name), user.key, msg, offline=True)
        )
        self._schedule_flush()
        self._send(list(user.clients()), msg)
        return msg

    def _deliver_offline(self, conn: Connection) -> None:
        """Give a connection that just logged in what was kept for its account while away."""
        if self.archive_store is None or conn.account is None:
            return
        owner = casefold(conn.account)
        d = self.flush_history()
        d.addCallback(lambda _: self.archive_store.take_offline(owner, OFFLINE_MAX))

        def give(messages: list[Message]) -> None:
            if messages and conn.user is not None:
                event = OfflineMessages(ts=self.clock.seconds(), messages=tuple(messages))
                self._send((conn.client,), event)

        d.addCallback(give)
        d.addErrback(lambda f: self.log.failure("offline messages of {a}", f, a=owner))

    def keep_offline(self, account: str, msgids: list[str]) -> Deferred:
        """Messages of ``account``'s archive that reached a connection of its but were never
        acknowledged (the session ended first): handed to its next login, as messages that
        came while it was away."""
        if self.archive_store is None or not msgids:
            return succeed(0)
        owner = casefold(account)
        d = self.flush_history()
        d.addCallback(lambda _: self.archive_store.mark_offline(owner, list(msgids)))
        return d

    # -- queries -----------------------------------------------------------------------------

    def _owner(self, conn: Connection) -> str | None:
        user = self._user(conn)
        return None if user.account is None else casefold(user.account)

    def archive_query(
        self,
        conn: Connection,
        peer: str | None,
        limit: int,
        *,
        after: tuple[float, str] | None = None,
        before: tuple[float, str] | None = None,
        newest: bool = True,
    ) -> Deferred:
        """One page of the user's private archive (``peer``: one conversation, by nick);
        empty for a user with no account."""
        try:
            owner = self._owner(conn)
        except ChatError as err:
            return fail(err)
        if owner is None or self.archive_store is None or limit <= 0:
            return succeed([])
        query = ArchiveQuery(
            owner,
            None if peer is None else casefold(peer),
            limit,
            after=after,
            before=before,
            newest=newest,
        )
        d = self.flush_history()
        d.addCallback(lambda _: self.archive_store.query_private(query))
        return d

    def room_archive_query(
        self,
        room: str,
        limit: int,
        *,
        after: tuple[float, str] | None = None,
        before: tuple[float, str] | None = None,
        newest: bool = True,
    ) -> Deferred:
        """One page of a room's stored history by (ts, id) anchors (room MAM); the caller
        checks that the user may read it."""
        if self.archive_store is None or limit <= 0:
            return succeed([])
        query = ArchiveQuery(room_key(room), None, limit, after=after, before=before, newest=newest)
        d = self.flush_history()
        d.addCallback(lambda _: self.archive_store.query_room(query))
        return d

    def archive_find(self, conn: Connection, msgid: str) -> Deferred:
        """The message ``msgid`` of the user's private archive, or None."""
        try:
            owner = self._owner(conn)
        except ChatError as err:
            return fail(err)
        if owner is None or self.archive_store is None:
            return succeed(None)
        d = self.flush_history()
        d.addCallback(lambda _: self.archive_store.find_private(owner, msgid))
        return d

    def archive_targets(self, conn: Connection, start: float, end: float, limit: int) -> Deferred:
        """The user's private conversations with messages in start < ts < end:
        [(peer nick key, latest ts)]."""
        try:
            owner = self._owner(conn)
        except ChatError as err:
            return fail(err)
        if owner is None or self.archive_store is None:
            return succeed([])
        d = self.flush_history()
        d.addCallback(lambda _: self.archive_store.private_targets(owner, start, end, limit))
        return d

    # -- read markers ------------------------------------------------------------------------

    def read_marker(
        self, conn: Connection, *, room: str | None = None, nick: str | None = None
    ) -> Deferred:
        """The account's read position (ts) in a room or a private conversation, or None; for
        a user without an account, the position it set while online."""
        user = self._user(conn)
        key = marker_key(room, nick)
        if user.account is None:
            return succeed(self._session_markers.get(user, {}).get(key))
        if self.archive_store is None:
            return succeed(None)
        return self.archive_store.get_read_marker(casefold(user.account), key)

    def mark_read(
        self, conn: Connection, ts: float, *, room: str | None = None, nick: str | None = None
    ) -> Deferred:
        """Move the account's read position in a room or a private conversation forward to
        ``ts`` (never back) and tell every connection of the account where it is now, so that
        reading on one device clears the others; fires with that position."""
        user = self._user(conn)
        key = marker_key(room, nick)

        def tell(position: float) -> float:
            event = ReadMarker(ts=self.clock.seconds(), target=key, read_ts=position)
            self._send(list(user.clients()), event)
            return position

        if user.account is None:
            markers = self._session_markers.setdefault(user, {})
            markers[key] = max(ts, markers.get(key, ts))
            return succeed(tell(markers[key]))
        if self.archive_store is None:
            return succeed(ts)
        d = self.archive_store.set_read_marker(casefold(user.account), key, ts)
        return d.addCallback(tell)

    # -- retention ---------------------------------------------------------------------------

    def set_room_retention(self, conn: Connection, name: str, days: float | None) -> Deferred:
        """A registered room's operator keeps its history ``days`` days (None: the server's
        retention again); only less than the server keeps.  Older messages go at once.
        Fires with how many were deleted."""
        try:
            user = self._user(conn)
            room = self._room(name)  # type: ignore[attr-defined]
            if not room.registered:
                raise ChatError(f"{room.name} is not registered: register it first")
            member = room.members.get(user)
            account = casefold(user.account) if user.account else None
            is_op = (member is not None and member.has("op")) or (
                account is not None
                and (account == casefold(room.owner or "") or account in room.reg_ops)
            )
            if not is_op:
                raise NotPermitted(
                    "only the room's operators may set its retention", room=room.name
                )
            server_days = self.settings.history_retention
            if days is not None:
                if not days > 0:
                    raise ChatError("retention is a number of days above 0")
                if server_days > 0 and days >= server_days:
                    raise ChatError(f"the server keeps history {server_days:g} days: choose fewer")
        except ChatError as err:
            return fail(err)
        room.retention = days
        self._persist(room)  # type: ignore[attr-defined]
        if days is None or self.archive_store is None:
            return succeed(0)
        before = self.clock.seconds() - days * DAY
        room.history = type(room.history)(
            (m for m in room.history if m.ts >= before), maxlen=room.history.maxlen
        )
        d = self.flush_history()
        d.addCallback(lambda _: self.archive_store.purge_room_before(room.name, before))
        return d

    def _start_expiry(self, delay: float = EXPIRY_FIRST) -> None:
        if self.archive_store is not None and self._expiry_call is None and not self._stopping:
            self._expiry_call = self.clock.callLater(delay, self._expiry_tick)

    def _expiry_tick(self) -> None:
        self._expiry_call = None
        d = self.expire_history()
        d.addCallback(self._expired)
        d.addErrback(lambda f: self.log.failure("expiring history", f))
        d.addBoth(lambda _: self._start_expiry(EXPIRY_INTERVAL))

    def _expired(self, deleted: int) -> None:
        if deleted:
            self.log.info("history retention: deleted {n} messages", n=deleted)

    @inlineCallbacks
    def expire_history(self):
        """Delete what retention no longer keeps: messages older than ``history_retention``
        days (0 keeps everything), and in rooms whose operators chose fewer days, older than
        that.  Deletes in small transactions, each its own thread job, so delivery
        and history writes go on meanwhile.  Fires with how many messages went."""
        store = self.archive_store
        if store is None or self._expiring:
            return 0
        self._expiring = True
        deleted = 0
        try:
            now = self.clock.seconds()
            days = self.settings.history_retention
            if days > 0:
                before = now - days * DAY
                for table in ("history", "private_history", "room_events"):
                    while True:
                        n = yield store.expire(table, before, EXPIRE_STEP)
                        deleted += n
                        if n < EXPIRE_STEP or self._stopping:
                            break
            for room in list(self.rooms.values()):
                if room.retention is not None and (days <= 0 or room.retention < days):
                    before = now - room.retention * DAY
                    deleted += yield store.purge_room_before(room.name, before)
        finally:
            self._expiring = False
        return deleted


def marker_key(room: str | None, nick: str | None) -> str:
    """Where a read position is kept: ``#`` and the room key for a room, the folded nick for
    a private conversation (a room and a nick may share a name)."""
    if room is not None:
        return "#" + room_key(room)
    if nick is None:
        raise ChatError("a read marker needs a room or a nick")
    return casefold(nick)
