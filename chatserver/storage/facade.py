"""What every storage backend does the same way: the store's methods, each one interaction run
in the pool's single thread, and the bookkeeping around each run (closed store, failures logged
once a minute, the health check's ``write_failure``, the metrics' latency observer).

A failing database (unreachable, read-only, full, damaged) fails each operation with the
core's :class:`~chatserver.core.errors.StorageUnavailable`, the database's own error in its
``error``: each protocol tells its users "try again later" in its own words, and nothing in
the core or the protocols needs to know the backend's exception classes.

A backend subclasses :class:`StoreFacade` and gives it its module of interactions
(``_queries``: functions ``_name(cur, *args)`` with the same names and meanings in every backend),
its placeholder for bound parameters, its test of what counts as a failing database, and its
own lifecycle (``open``, ``schema_version``, and whatever only it can do).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any, ClassVar, TypeVar

from twisted.enterprise import adbapi
from twisted.internet import defer, threads
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatserver.core.accounts import RegistrationInvite
from chatserver.core.bans import ServerBan
from chatserver.core.errors import StorageUnavailable
from chatserver.core.events import Message
from chatserver.core.names import casefold
from chatserver.core.records import (
    AccountRecord,
    AlwaysOnRecord,
    ArchiveEntry,
    ArchivePrefs,
    ArchiveQuery,
    Credential,
    PepNode,
    RoomEventRecord,
    RoomRecord,
    RosterItem,
)
from chatserver.storage import account_settings, room_events

__all__ = [
    "EXPIRE_BATCH",
    "FAILURE_LOG_INTERVAL",
    "SchemaTooNew",
    "StoreClosed",
    "StoreFacade",
    "StoreUnusable",
]

_T = TypeVar("_T")

# A failing database fails every query: one log line per kind of failure this often is enough
# to see it without one line per login attempt.
FAILURE_LOG_INTERVAL = 60.0
# Rows deleted per expiry transaction: small enough that the writer lock is held for a few
# milliseconds, so history batches written meanwhile are not held up.
EXPIRE_BATCH = 2000

log = Logger()


class StoreClosed(RuntimeError):
    """The store was used after ``close()``."""


class SchemaTooNew(RuntimeError):
    """The database was written by a newer chatserver; refuse rather than misread it."""


class StoreUnusable(RuntimeError):
    """The database is damaged or cannot be written: the server must not start on it."""


class StoreFacade:
    """The stores' common methods.  Every method returns a Deferred that fires on the reactor
    thread; the SQL runs in the pool's single thread, in call order."""

    # The backend's interactions (see the module docstring).
    _queries: ClassVar[ModuleType]
    # How the backend's driver marks a bound parameter in SQL text.
    _param: ClassVar[str]
    # The backend's name in log lines.
    kind: ClassVar[str]

    def __init__(self, path: str, reactor: Any, pool: adbapi.ConnectionPool) -> None:
        self.path = path
        self._reactor = reactor
        self._pool = pool
        self._closed = False
        # Called as observe(operation, seconds) when each operation finishes, the time
        # including its wait in the queue: the metrics endpoint's storage latency.
        self.observe: Callable[[str, float], None] | None = None
        # Why the last write failed, while it is the latest news about writes (a write that
        # succeeds clears it): the health check reports it.
        self.write_failure: str | None = None
        self._failures_logged: dict[str, float] = {}

    # -- what each backend says for itself ----------------------------------------------------

    @staticmethod
    def is_storage_failure(err: BaseException) -> bool:
        """Whether ``err`` says the database itself is failing, not that a statement broke a
        rule (a constraint) or that the caller asked for the impossible."""
        raise NotImplementedError

    def _interaction(
        self, func: Callable[..., _T], args: tuple[Any, ...], write: bool, transaction: bool
    ) -> Callable[[Any], _T]:
        """What the pool runs with a cursor: ``func(cur, *args)`` inside the backend's
        transaction (``transaction=False``: outside any, for what manages its own)."""
        return lambda cur: func(cur, *args)

    # -- running one operation ------------------------------------------------------------------

    def _run(
        self, func: Callable[..., _T], *args: Any, write: bool, transaction: bool = True
    ) -> Deferred[_T]:
        if self._closed:
            # The pool's thread pool silently drops work once stopped: fail loudly instead
            # of returning a Deferred that never fires.
            return defer.fail(StoreClosed(f"the store {self.path} is closed"))
        d: Deferred[_T] = self._submit(self._interaction(func, args, write, transaction))
        return self._track(d, func.__name__.lstrip("_"), write)

    def _submit(self, interaction: Callable[[Any], _T]) -> Deferred[_T]:
        """Run ``interaction`` in the pool's thread."""
        return self._pool.runInteraction(interaction)

    def _track(self, d: Deferred[_T], operation: str, write: bool) -> Deferred[_T]:
        """The bookkeeping of one operation (see the module docstring) around its result."""
        d.addCallbacks(
            self._succeeded,
            self._failed,
            callbackArgs=(write,),
            errbackArgs=(operation, write),
        )
        observe = self.observe
        if observe is not None:
            started = time.monotonic()

            def timed(result: Any) -> Any:
                observe(operation, time.monotonic() - started)
                return result

            d.addBoth(timed)
        return d

    def _succeeded(self, result: _T, write: bool) -> _T:
        if write and self.write_failure is not None:
            log.info("{kind} store {path}: writes succeed again", kind=self.kind, path=self.path)
            self.write_failure = None
        return result

    def _failed(self, failure: Failure, operation: str, write: bool) -> Failure:
        err = failure.value
        assert err is not None
        if not self.is_storage_failure(err):
            return failure
        reason = str(err).strip() or type(err).__name__
        if write:
            self.write_failure = reason
        # Logged here, once for every caller: a failing database otherwise shows only as
        # "internal error" to users and as nothing in the log.
        now = time.monotonic()
        last = self._failures_logged.get(reason)
        if last is None or now - last >= FAILURE_LOG_INTERVAL:
            self._failures_logged[reason] = now
            log.error(
                "{kind} store {path}: {operation} failed: {error}",
                kind=self.kind,
                path=self.path,
                operation=operation,
                error=reason,
            )
        return Failure(StorageUnavailable(error=err))

    # -- lifecycle --------------------------------------------------------------------------

    def probe_write(self) -> Deferred[None]:
        """A write that changes nothing: fails while writes fail, and clears
        :attr:`write_failure` once they succeed again."""
        return self._run(self._queries._probe_write, write=True)

    def close(self) -> Deferred[None]:
        """Let queued work finish, close the connection, stop the pool thread."""
        if self._closed:
            return defer.succeed(None)
        self._closed = True
        pool = self._pool

        def disconnect() -> None:
            # Runs after everything queued before it (one thread, FIFO).  Closing here, not on
            # the reactor thread, keeps the final work of the driver (SQLite's WAL
            # checkpoint) off the reactor.
            conn = pool.connections.get(pool.threadID())
            if conn is not None:
                pool.disconnect(conn)

        def stop(result: object) -> object:
            # The pool thread is idle by now, so joining it does not block the reactor.
            pool.close()
            return result

        d: Deferred[None] = threads.deferToThreadPool(self._reactor, pool.threadpool, disconnect)
        d.addBoth(stop)
        return d

    # -- IAccountStore ----------------------------------------------------------------------

    def get_account(self, name: str) -> Deferred[AccountRecord | None]:
        return self._run(self._queries._get_account, casefold(name), write=False)

    def registered_keys(self, keys: Sequence[str]) -> Deferred[set[str]]:
        folded = [casefold(key) for key in keys]
        return self._run(self._queries._registered_keys, folded, write=False)

    def account_keys(self) -> Deferred[list[str]]:
        return self._run(self._queries._account_keys, write=False)

    def create_account(self, record: AccountRecord) -> Deferred[None]:
        return self._run(self._queries._create_account, record, write=True)

    def update_credentials(self, name: str, credentials: Sequence[Credential]) -> Deferred[bool]:
        q = self._queries
        return self._run(q._update_credentials, casefold(name), tuple(credentials), write=True)

    def delete_account(self, name: str) -> Deferred[bool]:
        return self._run(self._queries._delete_account, casefold(name), write=True)

    def list_accounts(self) -> Deferred[list[AccountRecord]]:
        return self._run(self._queries._list_accounts, write=False)

    # -- registration invitations -----------------------------------------------------------

    def create_invited_account(self, record: AccountRecord, now: float) -> Deferred[None]:
        """Use up the unexpired invitation of ``record.name`` and store the account, in one
        transaction; errback AccountError(CLOSED) if there is no such invitation, EXISTS if
        the name is taken (the invitation then stays)."""
        return self._run(self._queries._create_invited_account, record, now, write=True)

    def save_invite(self, invite: RegistrationInvite) -> Deferred[None]:
        """Insert or replace the invitation of ``invite.name`` (dropping expired ones)."""
        return self._run(self._queries._save_invite, invite, write=True)

    def get_invite(self, name: str, now: float) -> Deferred[RegistrationInvite | None]:
        """The invitation of ``name`` (any case) if it has not expired at ``now``."""
        return self._run(self._queries._get_invite, casefold(name), now, write=False)

    def delete_invite(self, name: str) -> Deferred[bool]:
        return self._run(self._queries._delete_invite, casefold(name), write=True)

    def purge_invites(self, now: float) -> Deferred[int]:
        """Delete the invitations expired at ``now``; fire with how many there were."""
        return self._run(self._queries._purge_invites, now, write=True)

    def list_invites(self, now: float) -> Deferred[list[RegistrationInvite]]:
        """The invitations unexpired at ``now``, sorted by folded name (expired ones are
        deleted by the same transaction)."""
        return self._run(self._queries._list_invites, now, write=True)

    # -- IRoomStore -------------------------------------------------------------------------

    def load_rooms(self) -> Deferred[list[RoomRecord]]:
        return self._run(self._queries._load_rooms, write=False)

    def save_room(self, record: RoomRecord) -> Deferred[None]:
        return self._run(self._queries._save_room, record, write=True)

    def delete_room(self, name: str) -> Deferred[bool]:
        return self._run(self._queries._delete_room, name, write=True)

    # -- IHistoryStore ----------------------------------------------------------------------

    def append(self, messages: Iterable[Message]) -> Deferred[int]:
        """Store a batch in one transaction; fire with how many were new (duplicate ids are
        ignored)."""
        # Snapshot now: the caller may reuse its batch buffer as soon as we return.
        batch = tuple(messages)
        if not batch:
            return defer.succeed(0)
        return self._run(self._queries._append, batch, write=True)

    def _messages(
        self, where: str, params: tuple[Any, ...], limit: int, newest: bool
    ) -> Deferred[list[Message]]:
        # ``where`` is written with ``?``: the backend's own placeholder goes in its place.
        where = where.replace("?", self._param)
        return self._run(self._queries._query_messages, where, params, limit, newest, write=False)

    def latest(self, target: str, limit: int) -> Deferred[list[Message]]:
        return self._messages("", (target,), limit, True)

    def before(self, target: str, ts: float, limit: int) -> Deferred[list[Message]]:
        return self._messages(" AND ts < ?", (target, ts), limit, True)

    def after(self, target: str, ts: float, limit: int) -> Deferred[list[Message]]:
        return self._messages(" AND ts > ?", (target, ts), limit, False)

    def between(self, target: str, start: float, end: float, limit: int) -> Deferred[list[Message]]:
        return self._messages(" AND ts > ? AND ts < ?", (target, start, end), limit, False)

    def find(self, msgid: str) -> Deferred[Message | None]:
        return self._run(self._queries._find, msgid, write=False)

    def targets(self, start: float, end: float, limit: int) -> Deferred[list[tuple[str, float]]]:
        """Targets whose latest message is in start < ts < end, with that ts, ascending by
        it (ties by target); ``limit`` keeps the first of them, as ``between`` does."""
        return self._run(self._queries._targets, start, end, limit, write=False)

    def delete_message(self, msgid: str, owners: Iterable[str] = ()) -> Deferred[int]:
        """Delete the message ``msgid`` from room history and from the archives of
        ``owners``; fire with how many rows went."""
        return self._run(self._queries._delete_message, msgid, tuple(owners), write=True)

    def purge(self, target: str) -> Deferred[int]:
        """Delete every message (and room event) of ``target``; fire with how many messages
        there were."""
        return self._run(self._queries._purge, target, write=True)

    def append_events(self, records: Iterable[RoomEventRecord]) -> Deferred[int]:
        """Store room events (draft/event-playback) in one transaction."""
        batch = tuple(records)
        if not batch:
            return defer.succeed(0)
        return self._run(room_events.append, batch, self._param, write=True)

    def query_events(self, query: ArchiveQuery) -> Deferred[list[RoomEventRecord]]:
        """A page of a room's events (``query.owner`` is the room key), as ``query_room``."""
        return self._run(room_events.query, query, self._param, write=False)

    def find_event(self, msgid: str) -> Deferred[RoomEventRecord | None]:
        return self._run(room_events.find, msgid, self._param, write=False)

    def rename_target(self, old: str, new: str) -> Deferred[int]:
        """Move a renamed room's history (messages, events, read positions) to its new key."""
        return self._run(room_events.rename_target, old, new, self._param, write=True)

    # -- IArchiveStore ----------------------------------------------------------------------

    def append_private(self, entries: Iterable[ArchiveEntry]) -> Deferred[int]:
        batch = tuple(entries)
        if not batch:
            return defer.succeed(0)
        return self._run(self._queries._append_private, batch, write=True)

    def query_private(self, query: ArchiveQuery) -> Deferred[list[Message]]:
        return self._run(self._queries._query_private, query, write=False)

    def query_room(self, query: ArchiveQuery) -> Deferred[list[Message]]:
        return self._run(self._queries._query_room, query, write=False)

    def find_private(self, owner: str, msgid: str) -> Deferred[Message | None]:
        return self._run(self._queries._find_private, owner, msgid, write=False)

    def private_targets(
        self, owner: str, start: float, end: float, limit: int
    ) -> Deferred[list[tuple[str, float]]]:
        q = self._queries
        return self._run(q._private_targets, owner, start, end, limit, write=False)

    def take_offline(self, owner: str, limit: int) -> Deferred[list[Message]]:
        return self._run(self._queries._take_offline, owner, limit, write=True)

    def mark_offline(self, owner: str, msgids: list[str]) -> Deferred[int]:
        return self._run(self._queries._mark_offline, owner, list(msgids), write=True)

    def purge_private(self, owner: str, before: float | None = None) -> Deferred[int]:
        return self._run(self._queries._purge_private, owner, before, write=True)

    def purge_room_before(self, target: str, before: float) -> Deferred[int]:
        return self._run(self._queries._purge_room_before, target, before, write=True)

    def expire(self, table: str, before: float, batch: int = EXPIRE_BATCH) -> Deferred[int]:
        if table not in ("history", "private_history", "room_events"):
            raise ValueError(table)
        return self._run(self._queries._expire_batch, table, before, batch, write=True)

    def get_read_marker(self, account: str, target: str) -> Deferred[float | None]:
        return self._run(self._queries._get_read_marker, account, target, write=False)

    def set_read_marker(self, account: str, target: str, ts: float) -> Deferred[float]:
        return self._run(self._queries._set_read_marker, account, target, ts, write=True)

    # -- server bans (K-lines set by operators) -----------------------------------------------

    def load_server_bans(self) -> Deferred[list[ServerBan]]:
        return self._run(self._queries._load_server_bans, write=False)

    def save_server_ban(self, ban: ServerBan) -> Deferred[None]:
        return self._run(self._queries._save_server_ban, ban, write=True)

    def delete_server_ban(self, mask: str) -> Deferred[bool]:
        return self._run(self._queries._delete_server_ban, mask, write=True)

    # -- XMPP rosters (the XMPP factory is given this store as its IRosterStore) ------------

    def get_roster(self, account: str) -> Deferred[list[RosterItem]]:
        return self._run(self._queries._get_roster, casefold(account), write=False)

    def set_item(self, account: str, item: RosterItem) -> Deferred[None]:
        """Insert or replace one item (the account must exist: rows go with it)."""
        return self._run(self._queries._set_roster_item, casefold(account), item, write=True)

    def remove_item(self, account: str, jid: str) -> Deferred[bool]:
        return self._run(self._queries._remove_roster_item, casefold(account), jid, write=True)

    # -- block lists (the core's, one per account) ------------------------------------------

    def load_blocks(self) -> Deferred[list[tuple[str, str]]]:
        """Every (casefolded account, blocked name) pair."""
        return self._run(self._queries._load_blocks, write=False)

    def add_blocks(self, account: str, names: list[str]) -> Deferred[None]:
        return self._run(self._queries._add_blocks, casefold(account), names, write=True)

    def remove_blocks(self, account: str, names: list[str]) -> Deferred[None]:
        return self._run(self._queries._remove_blocks, casefold(account), names, write=True)

    # -- per-account settings: always-on membership, archive preferences --------------------

    def load_always_on(self) -> Deferred[list[AlwaysOnRecord]]:
        return self._run(account_settings.load_always_on, self._param, write=False)

    def save_always_on(self, record: AlwaysOnRecord) -> Deferred[None]:
        return self._run(account_settings.save_always_on, self._param, record, write=True)

    def touch_always_on(self, accounts: list[str], ts: float) -> Deferred[None]:
        q = account_settings
        return self._run(q.touch_always_on, self._param, accounts, ts, write=True)

    def delete_always_on(self, account: str) -> Deferred[None]:
        q = account_settings
        return self._run(q.delete_always_on, self._param, casefold(account), write=True)

    def load_archive_prefs(self) -> Deferred[list[tuple[str, ArchivePrefs]]]:
        return self._run(account_settings.load_archive_prefs, self._param, write=False)

    def save_archive_prefs(self, account: str, prefs: ArchivePrefs) -> Deferred[None]:
        q = account_settings
        return self._run(q.save_archive_prefs, self._param, casefold(account), prefs, write=True)

    # -- XMPP personal data (the XMPP factory is given this store as its IPepStore) ----------

    def get_pep(self, account: str) -> Deferred[list[PepNode]]:
        return self._run(self._queries._get_pep, casefold(account), write=False)

    def save_pep_node(self, account: str, node: PepNode) -> Deferred[None]:
        """Insert or replace one node with its items (the account must exist)."""
        return self._run(self._queries._save_pep_node, casefold(account), node, write=True)

    def delete_pep_node(self, account: str, kind: str, node: str) -> Deferred[bool]:
        q = self._queries
        return self._run(q._delete_pep_node, casefold(account), kind, node, write=True)
