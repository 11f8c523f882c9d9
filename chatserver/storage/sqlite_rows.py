"""What the SQLite store and its history writer process share: the connection's set-up, the
explicit transactions, and the rows of room and private history.

This module imports only the standard library, so the writer process starts quickly.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatserver.core.events import Message
    from chatserver.core.records import ArchiveEntry

# Milliseconds a statement waits for another process's lock before failing with "database is
# locked".  Writes here are short, so 5 s means something is wrong, not merely busy.
BUSY_TIMEOUT_MS = 5000


def is_storage_failure(err: BaseException) -> bool:
    """Whether ``err`` says the database itself is failing (read-only, damaged, full, locked),
    not that a statement broke a rule (a constraint) or that the caller asked for the
    impossible."""
    return isinstance(err, sqlite3.DatabaseError) and not isinstance(err, sqlite3.IntegrityError)


def configure(conn: sqlite3.Connection) -> str:
    """Set up a new connection before it is used; return its journal mode (``wal`` unless
    the filesystem cannot hold WAL's shared-memory index)."""
    conn.isolation_level = None  # BEGIN/COMMIT are ours: see chatserver.storage.sqlite
    # First, so that the journal_mode switch below also waits for a busy lock.
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    (mode,) = _switch_to_wal(conn)
    # With WAL, NORMAL never corrupts the database; a power loss (not a process crash) may
    # drop the last transactions before a checkpoint.  Losing the last seconds of history on
    # power loss is within our durability promise; an fsync on every history batch is not
    # worth its cost, so FULL is not used.
    conn.execute("PRAGMA synchronous = NORMAL")
    # Off by default in SQLite and per connection: without it ON DELETE CASCADE does nothing.
    conn.execute("PRAGMA foreign_keys = ON")
    return str(mode)


def _switch_to_wal(conn: sqlite3.Connection) -> tuple[str]:
    """``PRAGMA journal_mode = WAL``, retried while another process holds the lock.

    The switch on a new file takes an exclusive lock without calling the busy handler, so
    a server and a CLI command opening a fresh database together can see "locked" at once.
    This runs in the store's thread or its writer process, where waiting blocks nothing else.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextlib.contextmanager
def _transaction(cur: sqlite3.Cursor, *, write: bool) -> Iterator[None]:
    """One explicit transaction on ``cur``: committed on success, rolled back on any error.

    Reads take a transaction too so that multi-statement reads see one snapshot.
    """
    cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield
        cur.execute("COMMIT")
    except BaseException:
        if cur.connection.in_transaction:
            # A failing ROLLBACK must not hide the error that caused it.
            with contextlib.suppress(sqlite3.Error):
                cur.execute("ROLLBACK")
        raise


# -- history rows -----------------------------------------------------------------------------


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _utf8(text: str) -> str:
    """``text``, with lone surrogates (which SQLite cannot store) replaced by ``?``.

    A protocol that decodes bad input with ``surrogateescape`` would otherwise make one message
    fail the whole history batch it is in, losing everyone else's messages with it.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


_MESSAGE_COLUMNS = "id, target, ts, nick, ident, host, account, realname, kind, text, tags"


def _messages_fields(messages: Iterable[Message]) -> list[tuple[Any, ...]]:
    """Messages' columns as plain values, before the checks of :func:`_row_of`: what the
    serving process hands to the history writer.  Built in one comprehension with no call
    per message, since this is what the serving process pays for each message stored."""
    return [
        (
            msg.id,
            msg.room,
            msg.target,
            msg.ts,
            (who := msg.source).nick,
            who.ident,
            who.host,
            who.account,
            who.realname,
            msg.kind,
            msg.text,
            msg.tags,
        )
        for msg in messages
    ]


def _row_of(fields: Sequence[Any]) -> tuple[Any, ...]:
    """The history row of :func:`_messages_fields`' values: tags as JSON, text storable."""
    msgid, room, target, ts, nick, ident, host, account, realname, kind, text, tags = fields
    if room is not None:
        target = room
    elif target is None:
        raise ValueError(f"message {msgid!r} has neither room nor target")
    tags = _dumps([[key, value] for key, value in tags]) if tags else "[]"
    if f"{msgid}{target}{nick}{ident}{host}{account or ''}{realname}{text}{tags}".isascii():
        # Nearly every row: all of its text ASCII, so nothing for _utf8 to replace (one
        # check of the whole row costs less than one per field).
        return (msgid, target, ts, nick, ident, host, account, realname, kind, text, tags)
    return (
        _utf8(msgid),
        _utf8(target),
        ts,
        _utf8(nick),
        _utf8(ident),
        _utf8(host),
        None if account is None else _utf8(account),
        _utf8(realname),
        kind,
        _utf8(text),
        _utf8(tags),
    )


# Rows per INSERT statement when appending history: one statement of many rows costs SQLite
# (and the GIL hand-over around each step) far less than one step per row.  Only these few
# sizes, so that the connection's statement cache holds three prepared statements, not one
# per batch size.
_APPEND_SIZES = (64, 8, 1)
_ROW_PLACEHOLDERS = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_APPEND_SQL = {
    size: f"INSERT OR IGNORE INTO history ({_MESSAGE_COLUMNS}) VALUES "
    + ", ".join([_ROW_PLACEHOLDERS] * size)
    for size in _APPEND_SIZES
}


def _append_fields(cur: sqlite3.Cursor, messages: Sequence[Sequence[Any]]) -> int:
    """Insert :func:`_messages_fields` tuples, several rows per statement; fire with how many
    were new (an id already stored is skipped, so a batch written twice is stored once)."""
    stored = 0
    start = 0
    for size in _APPEND_SIZES:
        sql = _APPEND_SQL[size]
        while len(messages) - start >= size:
            chunk = messages[start : start + size]
            cur.execute(sql, [value for fields in chunk for value in _row_of(fields)])
            stored += cur.rowcount
            start += size
    return stored


_PRIVATE_COLUMNS = "id, target, ts, nick, ident, host, account, realname, kind, text, tags, stanza"
_PRIVATE_INSERT = (
    f"INSERT OR IGNORE INTO private_history (owner, peer, offline, {_PRIVATE_COLUMNS})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _stanza_bytes(msg: Message) -> bytes | None:
    data = getattr(msg.native, "data", None)
    return data if isinstance(data, bytes) else None


def _private_fields(entries: Sequence[ArchiveEntry]) -> list[tuple[Any, ...]]:
    """Archive entries as plain values (see :func:`_messages_fields`)."""
    fields = _messages_fields([entry.message for entry in entries])
    return [
        (entry.owner, entry.peer, entry.offline, message, _stanza_bytes(entry.message))
        for entry, message in zip(entries, fields, strict=True)
    ]


def _append_private_fields(cur: sqlite3.Cursor, entries: Sequence[Sequence[Any]]) -> int:
    rows = []
    for owner, peer, offline, fields, stanza in entries:
        # The room column of a history row is the recipient nick here.
        text = None if stanza is None else _utf8(stanza.decode("utf-8", "replace"))
        rows.append((owner, peer, 1 if offline else 0, *_row_of(fields), text))
    cur.executemany(_PRIVATE_INSERT, rows)
    return cur.rowcount
