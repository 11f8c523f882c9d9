"""History write-behind: room messages kept in memory and written to the store in batches.

A message said in a room goes into the room's in-memory history and a pending list; the list
is written in one transaction every ``history_flush_interval`` seconds (or, with 0, at once,
with whatever is said during a write grouped into the next).  Reads of the store flush first,
so that a reader sees everything said before it asked.

When the store fails (the database is unreachable, read-only or full), what was not written
stays pending, in order, and is retried every :data:`RETRY_INTERVAL` seconds until a write
succeeds: nothing delivered is dropped.  Meanwhile at most ``history_unstored_limit``
messages may wait; past it, each message that would be stored is refused before it is
delivered (:class:`StorageUnavailable`, which each protocol tells its sender), so that what
the server acknowledged is always what it will store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.logger import Logger

from chatserver.core.errors import ChatError, StorageUnavailable
from chatserver.core.events import Message, Who
from chatserver.core.names import room_key
from chatserver.core.records import ArchiveEntry, ArchiveQuery, RoomEventRecord
from chatserver.core.settings import CoreSettings

if TYPE_CHECKING:
    from chatserver.core.rooms import Room
    from chatserver.core.users import Connection, User

# Seconds between attempts to write history while the store fails.
RETRY_INTERVAL = 1.0


class HistoryLog:
    """The part of ChatService that keeps and stores room history."""

    log: Logger
    settings: CoreSettings
    clock: Any
    history_store: Any
    rooms: dict[str, Room]
    stats: dict[str, int]
    _stopping: bool

    if TYPE_CHECKING:

        def _room(self, name: str) -> Room: ...
        def _user(self, conn: Connection) -> User: ...
        def _new_id(self) -> str: ...

    def _init_history(self) -> None:
        self._pending_history: list[Message] = []
        # Private messages for the archives of accounts (chatserver.core.archive), written
        # in the same batches.
        self._pending_private: list[ArchiveEntry] = []
        # Joins, parts, quits, kicks, nick changes and topics, for replay with the messages.
        self._pending_events: list[RoomEventRecord] = []
        self._flush_call: Any = None
        self._flushing: Deferred | None = None
        # True from a failed history write until a write succeeds; while it is, messages that
        # would be stored are checked against history_unstored_limit before they are sent.
        self.store_failing = False

    def _load_recent(self, room: Room) -> Deferred:
        if not room.history.maxlen:
            return succeed(None)

        def loaded(messages: list[Message]) -> None:
            # Messages said since the room was created in memory stay after the loaded ones.
            newer = list(room.history)
            room.history.clear()
            seen = {m.id for m in newer}
            room.history.extend(m for m in messages if m.id not in seen)
            room.history.extend(newer)

        d = self.history_store.latest(room.name, room.history.maxlen)
        d.addCallback(loaded)
        d.addErrback(lambda f: self.log.failure("loading history of {room}", f, room=room.name))
        return d

    def _record(self, room: Room, msg: Message) -> None:
        room.remember(msg)
        self._pending_history.append(msg)
        self.stats["messages"] += 1
        # Checked here rather than in the call: a room message on the hot path pays for a
        # call only when a write has to be scheduled.
        if self._flush_call is None and not self._stopping:
            self._schedule_flush()

    def store_messages(self, messages: list[Message]) -> None:
        """Store room messages that another node delivered here and may not have written.

        Cluster mode: a node that dies takes with it the messages it had not written yet;
        the nodes that received them write them again.  The store keeps one row per message
        id, so a message written twice is stored once.
        """
        if messages:
            self._pending_history.extend(messages)
            if self._flush_call is None and not self._stopping:
                self._schedule_flush()

    def _record_event(
        self,
        room: str,
        kind: str,
        who: Who,
        ts: float,
        text: str = "",
        obj: str = "",
        msgid: str | None = None,
    ) -> None:
        """Keep a room event (see RoomEventRecord) for history replay."""
        if self._stopping:
            return
        if len(self._pending_events) >= self.settings.history_unstored_limit:
            # The database has been failing for a while: events (a replay nicety) are let go
            # rather than held without bound; messages have their own limit.
            return
        self._pending_events.append(
            RoomEventRecord(msgid or self._new_id(), room, ts, kind, who, text, obj)
        )
        if self._flush_call is None:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_call is None and not self._stopping:
            interval = self.settings.history_flush_interval
            if interval <= 0:
                # Written at once, or, while a write is in progress, together with everything
                # said meanwhile as soon as it ends (group commit): one transaction per message
                # would fall behind a busy server.
                if self._flushing is None:
                    self.flush_history()
            else:
                self._flush_call = self.clock.callLater(interval, self.flush_history)

    def flush_history(self) -> Deferred:
        """Write pending messages in one batch; fires when everything pending so far is stored."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        batch, self._pending_history = self._pending_history, []
        private, self._pending_private = self._pending_private, []
        events, self._pending_events = self._pending_events, []
        if not batch and not private and not events:
            return self._when_flushed()
        previous = self._when_flushed()
        d: Deferred = Deferred()
        # Set before the write starts: a store that answers at once runs done() right away.
        self._flushing = d

        def write(_: Any) -> Deferred:
            d = self.history_store.append(batch) if batch else succeed(0)
            if private:
                d.addCallback(lambda _: self.history_store.append_private(private))
            if events:
                d.addCallback(lambda _: self.history_store.append_events(events))
            return d

        def done(result: Any) -> None:
            if self._flushing is d:
                self._flushing = None
            if self.store_failing:
                self.store_failing = False
                self.log.info(
                    "history written again ({n} messages had waited for the database)",
                    n=len(batch) + len(private),
                )
            d.callback(None)
            if (
                (self._pending_history or self._pending_private or self._pending_events)
                and self._flushing is None
                and self._flush_call is None
                and self.settings.history_flush_interval <= 0
                and not self._stopping
            ):
                self.flush_history()

        def failed(f: Any) -> None:
            # Keep them, in order, to retry rather than lose them.
            self._pending_history[:0] = batch
            self._pending_private[:0] = private
            self._pending_events[:0] = events
            if f.check(StorageUnavailable) is None:
                self.log.failure("writing {n} history messages", f, n=len(batch))
            elif not self.store_failing:
                # The store logs the database's error; this says what it means for history.
                self.log.warn(
                    "history cannot be written: {n} messages wait in memory (at most {limit}"
                    " before new messages are refused); retrying every {retry:g} s",
                    n=self.history_pending(),
                    limit=self.settings.history_unstored_limit,
                    retry=RETRY_INTERVAL,
                )
            self.store_failing = True
            if self._flushing is d:
                self._flushing = None
            if self._flush_call is None and not self._stopping:
                self._flush_call = self.clock.callLater(RETRY_INTERVAL, self.flush_history)
            d.callback(None)

        previous.addCallback(write).addCallbacks(done, failed)
        return self._when_flushed()

    def _check_unstored(self) -> None:
        """Refuse a message that would be stored while the store fails and the messages
        waiting for it have reached the limit."""
        if self.history_pending() >= self.settings.history_unstored_limit:
            raise StorageUnavailable(
                "the server's database is unavailable and too many messages wait to be"
                " stored: this one was not sent; try again in a moment"
            )

    def _when_flushed(self) -> Deferred:
        """A new Deferred that fires (with None) when the write in progress is done.

        Every caller gets its own: callbacks that callers add to one shared Deferred would
        run inside each other's chains and see each other's results.
        """
        current = self._flushing
        if current is None:
            return succeed(None)
        waiter: Deferred = Deferred()

        def fire(result: Any) -> Any:
            waiter.callback(None)
            return result

        current.addBoth(fire)
        return waiter

    @inlineCallbacks
    def purge_history(self, name: str):
        """Forget the history of the room ``name``: in memory, waiting to be written, and in
        the store.  Fires with how many stored messages were deleted."""
        key = room_key(name)
        room = self.rooms.get(key)
        if room is not None:
            room.history.clear()
        self._pending_history = [m for m in self._pending_history if m.room != key]
        self._pending_events = [e for e in self._pending_events if e.room != key]
        # A write in progress may hold messages of the room: the purge comes after it.
        yield self._when_flushed()
        deleted = yield self.history_store.purge(key)
        return deleted

    def recent(self, name: str, count: int) -> list[Message]:
        """The last ``count`` messages of a room from memory (for replay on join)."""
        room = self._room(name)
        if count <= 0:
            return []
        return list(room.history)[-count:]

    def _history(self, method: str, name: str, *args: Any) -> Deferred:
        try:
            key = self._room(name).name if name in self.rooms else room_key(name)
        except ChatError as err:
            return fail(err)
        d = self.flush_history()
        d.addCallback(lambda _: getattr(self.history_store, method)(key, *args))
        return d

    def history_latest(self, room: str, limit: int) -> Deferred:
        return self._history("latest", room, limit)

    def history_before(self, room: str, ts: float, limit: int) -> Deferred:
        return self._history("before", room, ts, limit)

    def history_after(self, room: str, ts: float, limit: int) -> Deferred:
        return self._history("after", room, ts, limit)

    def history_between(self, room: str, start: float, end: float, limit: int) -> Deferred:
        return self._history("between", room, start, end, limit)

    @inlineCallbacks
    def history_around(self, room: str, ts: float, limit: int):
        """About ``limit`` messages centred on ``ts`` (the message at ``ts`` included)."""
        half = max(limit - limit // 2, 1)
        older = yield self._history("before", room, ts + 1e-6, half)
        newer = yield self._history("after", room, ts + 1e-6, max(limit - len(older), 0))
        return (older + newer)[:limit]

    def history_find(self, msgid: str) -> Deferred:
        return self.flush_history().addCallback(lambda _: self.history_store.find(msgid))

    def history_find_any(self, msgid: str) -> Deferred:
        """Fire with the stored Message with that id, else the room event (both have ``room``
        and ``ts``), else None: a selector of a history that replays events."""

        def found(message: Message | None) -> Any:
            if message is not None:
                return message
            return self.history_store.find_event(msgid)

        return self.history_find(msgid).addCallback(found)

    def history_events(
        self,
        room: str,
        limit: int,
        *,
        after: tuple[float, str] | None = None,
        before: tuple[float, str] | None = None,
        newest: bool = True,
    ) -> Deferred:
        """Fire with a page of the room's events (RoomEventRecords) between the exclusive
        (ts, id) anchors, the ``limit`` nearest ``before`` if ``newest`` else nearest
        ``after``, in ascending order."""
        try:
            key = self._room(room).name if room in self.rooms else room_key(room)
        except ChatError as err:
            return fail(err)
        page = ArchiveQuery(key, None, limit, after, before, newest)
        d = self.flush_history()
        d.addCallback(lambda _: self.history_store.query_events(page))
        return d

    def history_targets(self, conn: Connection, start: float, end: float, limit: int) -> Deferred:
        """Rooms of the user whose latest message is between ``start`` and ``end``:
        [(room, latest ts)]."""
        user = self._user(conn)
        mine = set(user.rooms)
        d = self.flush_history()
        d.addCallback(lambda _: self.history_store.targets(start, end, limit + len(self.rooms)))
        d.addCallback(lambda rows: [(t, ts) for t, ts in rows if t in mine][:limit])
        return d

    def history_pending(self) -> int:
        """Messages said but not yet handed to the history store."""
        return len(self._pending_history) + len(self._pending_private)
