"""The embedded storage backend: accounts, registered rooms and history in one SQLite file.

Every query runs in the thread of an ``adbapi.ConnectionPool`` with exactly one connection, so the
reactor thread never touches the database and this process never contends with itself.  The
server's store (``writer=True``) has room and private history appended by a child process
instead (:mod:`chatserver.storage.writer`), and runs each other operation once the appends sent
before it are acknowledged, so that the calls keep their order as with the one thread.  Other
processes may open the same file at the same time (``chatserver account create`` while the server
runs): WAL lets readers and one writer proceed together, the busy timeout makes a second writer
wait instead of failing, and every write transaction starts with ``BEGIN IMMEDIATE`` so that it
takes the write lock before it reads.  (A deferred transaction that reads and then writes cannot
be rescued by the busy timeout when another process committed in between: SQLite fails it with
SQLITE_BUSY at once.)

The connection runs in autocommit mode (``isolation_level = None``) and this module issues
BEGIN / COMMIT itself, because the sqlite3 module's implicit transactions start only at the first
write, which is too late for the reasoning above, and ``executescript`` would commit half-way.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from chatserver.core.accounts import RegistrationInvite, not_invited
from chatserver.core.bans import ServerBan
from chatserver.core.errors import AccountError, StorageUnavailable
from chatserver.core.events import Message, StoredNative, Who
from chatserver.core.interfaces import (
    IAccountSettingsStore,
    IAccountStore,
    IArchiveStore,
    IBlockStore,
    IHistoryStore,
    IRoomStore,
    IServerBanStore,
)
from chatserver.core.names import casefold
from chatserver.core.records import (
    AccountRecord,
    ArchiveEntry,
    ArchiveQuery,
    BanRecord,
    Credential,
    PepItem,
    PepNode,
    RoomRecord,
    RosterItem,
)
from chatserver.storage import room_events
from chatserver.storage.facade import (
    SchemaTooNew,
    StoreClosed,
    StoreFacade,
    StoreUnusable,
)
from chatserver.storage.migrations import MIGRATIONS, Step
from chatserver.storage.sqlite_rows import (
    _MESSAGE_COLUMNS,
    _PRIVATE_COLUMNS,
    _append_fields,
    _append_private_fields,
    _dumps,
    _messages_fields,
    _private_fields,
    _row_of,
    _stanza_bytes,
    _transaction,
    _utf8,
    configure,
    is_storage_failure,
)
from chatserver.storage.writer import HISTORY, PRIVATE
from chatserver.storage.writer_link import WriterFailed, WriterLink

__all__ = ["SchemaTooNew", "SqliteStore", "StoreClosed", "StoreUnusable"]

_T = TypeVar("_T")

log = Logger()


# Problems quick_check reports at most: the first few say enough, and a badly damaged file
# could otherwise yield one line per page.
QUICK_CHECK_ROWS = 5
# SQLITE_CORRUPT and SQLITE_NOTADB: the file's content is wrong, not its permissions or disk.
_DAMAGED_CODES = frozenset({11, 26})


def _configure_connection(conn: sqlite3.Connection) -> None:
    """``cp_openfun``: set up each new connection before it is used."""
    mode = configure(conn)
    if mode.lower() != "wal":
        # Some filesystems (network mounts) cannot hold the shared-memory index WAL needs.
        # The store still works, but readers and the writer block each other.
        log.warn("SQLite could not enable WAL (journal_mode is {mode}); continuing", mode=mode)


def _storage_failure(err: BaseException) -> bool:
    """The store's test of a failing database: SQLite's, or no history writer to write."""
    return isinstance(err, WriterFailed) or is_storage_failure(err)


def _migrate(cur: sqlite3.Cursor, migrations: Sequence[Step]) -> tuple[int, int]:
    """Apply the missing steps, one transaction each; return (version before, version after).

    Each step re-reads the version under the write lock, so two processes opening a fresh file
    at once apply every step exactly once between them.
    """
    first: int | None = None
    while True:
        with _transaction(cur, write=True):
            cur.execute("PRAGMA user_version")
            (version,) = cur.fetchone()
            if first is None:
                first = version
            if version > len(migrations):
                raise SchemaTooNew(
                    f"database schema version {version} is newer than this chatserver's"
                    f" ({len(migrations)}); upgrade chatserver or restore a backup"
                )
            if version == len(migrations):
                return first, version
            step = migrations[version]
            if callable(step):
                step(cur)
            else:
                for statement in step:
                    cur.execute(statement)
            # PRAGMA takes no bound parameters; the value is an int we computed.
            cur.execute(f"PRAGMA user_version = {version + 1:d}")


# -- row conversion (runs in the pool thread) ------------------------------------------------


def _message_row(msg: Message) -> tuple[Any, ...]:
    return _row_of(_messages_fields((msg,))[0])


def _message(row: Sequence[Any]) -> Message:
    msgid, target, ts, nick, ident, host, account, realname, kind, text, tags = row
    return Message(
        ts=ts,
        id=msgid,
        source=Who(nick, ident, host, account, realname),
        text=text,
        kind=kind,
        room=target,
        tags=tuple((key, value) for key, value in json.loads(tags)),
    )


def _room_row(room: RoomRecord) -> tuple[Any, ...]:
    return (
        room.name,
        room.owner,
        room.created_at,
        room.topic,
        room.topic_by,
        room.topic_at,
        _dumps([[mode, arg] for mode, arg in room.modes]),
        _dumps(list(room.ops)),
        _dumps(list(room.voices)),
        _dumps([[ban.mask, ban.set_by, ban.set_at] for ban in room.bans]),
        _dumps(list(room.invites)),
        _dumps(dict(room.extra)),
    )


def _room(row: Sequence[Any]) -> RoomRecord:
    name, owner, created_at, topic, topic_by, topic_at, modes, ops, voices, bans, invites, extra = (
        row
    )
    return RoomRecord(
        name=name,
        owner=owner,
        created_at=created_at,
        topic=topic,
        topic_by=topic_by,
        topic_at=topic_at,
        modes=tuple((mode, arg) for mode, arg in json.loads(modes)),
        ops=tuple(json.loads(ops)),
        voices=tuple(json.loads(voices)),
        bans=tuple(BanRecord(mask, set_by, set_at) for mask, set_by, set_at in json.loads(bans)),
        invites=tuple(json.loads(invites)),
        extra=json.loads(extra),
    )


def _credential_rows(key: str, credentials: Iterable[Credential]) -> list[tuple[Any, ...]]:
    return [
        (
            key,
            cred.mechanism,
            seq,
            bytes(cred.salt),
            bytes(cred.stored_key),
            bytes(cred.server_key),
            cred.iterations,
        )
        for seq, cred in enumerate(credentials)
    ]


def _check_limit(limit: int) -> None:
    # SQLite reads a negative LIMIT as "no limit": a caller's bug would become a full scan.
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")


# -- interactions (each runs in the pool thread, inside one transaction) ---------------------


# Names per query in registered_keys: well under SQLite's limit on bound parameters.
_KEYS_PER_QUERY = 500


def _registered_keys(cur: sqlite3.Cursor, keys: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        chunk = keys[start : start + _KEYS_PER_QUERY]
        marks = ", ".join("?" * len(chunk))
        cur.execute(f"SELECT key FROM accounts WHERE key IN ({marks})", chunk)
        found.update(key for (key,) in cur.fetchall())
    return found


def _account_keys(cur: sqlite3.Cursor) -> list[str]:
    cur.execute("SELECT key FROM accounts")
    return [key for (key,) in cur.fetchall()]


def _get_account(cur: sqlite3.Cursor, key: str) -> AccountRecord | None:
    cur.execute("SELECT name, created_at, email FROM accounts WHERE key = ?", (key,))
    row = cur.fetchone()
    if row is None:
        return None
    name, created_at, email = row
    cur.execute(
        "SELECT mechanism, salt, stored_key, server_key, iterations FROM credentials"
        " WHERE account = ? ORDER BY seq",
        (key,),
    )
    creds = tuple(Credential(*cred) for cred in cur.fetchall())
    return AccountRecord(name=name, credentials=creds, created_at=created_at, email=email)


def _create_account(cur: sqlite3.Cursor, record: AccountRecord) -> None:
    key = casefold(record.name)
    # Checked under the write lock taken by BEGIN IMMEDIATE, so no other process can slip in.
    cur.execute("SELECT name FROM accounts WHERE key = ?", (key,))
    row = cur.fetchone()
    if row is not None:
        raise AccountError(AccountError.EXISTS, f"the account {row[0]} already exists")
    cur.execute(
        "INSERT INTO accounts (key, name, created_at, email) VALUES (?, ?, ?, ?)",
        (key, record.name, record.created_at, record.email),
    )
    cur.executemany(
        "INSERT INTO credentials (account, mechanism, seq, salt, stored_key, server_key,"
        " iterations) VALUES (?, ?, ?, ?, ?, ?, ?)",
        _credential_rows(key, record.credentials),
    )


def _update_credentials(cur: sqlite3.Cursor, key: str, credentials: Sequence[Credential]) -> bool:
    cur.execute("SELECT 1 FROM accounts WHERE key = ?", (key,))
    if cur.fetchone() is None:
        return False
    cur.execute("DELETE FROM credentials WHERE account = ?", (key,))
    cur.executemany(
        "INSERT INTO credentials (account, mechanism, seq, salt, stored_key, server_key,"
        " iterations) VALUES (?, ?, ?, ?, ?, ?, ?)",
        _credential_rows(key, credentials),
    )
    return True


def _delete_account(cur: sqlite3.Cursor, key: str) -> bool:
    cur.execute("DELETE FROM accounts WHERE key = ?", (key,))
    existed = cur.rowcount > 0
    # The account's private archive and read positions go with it, in the same transaction.
    cur.execute("DELETE FROM private_history WHERE owner = ?", (key,))
    cur.execute("DELETE FROM read_markers WHERE account = ?", (key,))
    return existed


def _list_accounts(cur: sqlite3.Cursor) -> list[AccountRecord]:
    creds: dict[str, list[Credential]] = {}
    cur.execute(
        "SELECT account, mechanism, salt, stored_key, server_key, iterations FROM credentials"
        " ORDER BY account, seq"
    )
    for key, *fields in cur.fetchall():
        creds.setdefault(key, []).append(Credential(*fields))
    # The key is the casefolded name, and SQLite's BINARY order on UTF-8 is code point order,
    # which is how Python sorts str: ORDER BY key is "sorted by casefolded name".
    cur.execute("SELECT key, name, created_at, email FROM accounts ORDER BY key")
    return [
        AccountRecord(
            name=name, credentials=tuple(creds.get(key, ())), created_at=created_at, email=email
        )
        for key, name, created_at, email in cur.fetchall()
    ]


def _create_invited_account(cur: sqlite3.Cursor, record: AccountRecord, now: float) -> None:
    # Under the write lock: of two registrations racing for one invitation (two processes,
    # or two protocols) exactly one deletes the row; and should the insert fail, the rollback
    # puts the invitation back.
    cur.execute(
        "DELETE FROM registration_invites WHERE key = ? AND expires_at > ?",
        (casefold(record.name), now),
    )
    if cur.rowcount == 0:
        raise not_invited()
    _create_account(cur, record)


_INVITE_COLUMNS = "name, invited_by, created_at, expires_at"


def _save_invite(cur: sqlite3.Cursor, invite: RegistrationInvite) -> None:
    _purge_invites(cur, invite.created_at)
    cur.execute(
        f"INSERT INTO registration_invites (key, {_INVITE_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET name = excluded.name,"
        " invited_by = excluded.invited_by, created_at = excluded.created_at,"
        " expires_at = excluded.expires_at",
        (
            casefold(invite.name),
            invite.name,
            invite.invited_by,
            invite.created_at,
            invite.expires_at,
        ),
    )


def _get_invite(cur: sqlite3.Cursor, key: str, now: float) -> RegistrationInvite | None:
    cur.execute(
        f"SELECT {_INVITE_COLUMNS} FROM registration_invites WHERE key = ? AND expires_at > ?",
        (key, now),
    )
    row = cur.fetchone()
    return None if row is None else RegistrationInvite(*row)


def _delete_invite(cur: sqlite3.Cursor, key: str) -> bool:
    cur.execute("DELETE FROM registration_invites WHERE key = ?", (key,))
    return cur.rowcount > 0


def _purge_invites(cur: sqlite3.Cursor, now: float) -> int:
    cur.execute("DELETE FROM registration_invites WHERE expires_at <= ?", (now,))
    return cur.rowcount


def _list_invites(cur: sqlite3.Cursor, now: float) -> list[RegistrationInvite]:
    _purge_invites(cur, now)
    cur.execute(f"SELECT {_INVITE_COLUMNS} FROM registration_invites ORDER BY key")
    return [RegistrationInvite(*row) for row in cur.fetchall()]


def _load_rooms(cur: sqlite3.Cursor) -> list[RoomRecord]:
    cur.execute(
        "SELECT name, owner, created_at, topic, topic_by, topic_at, modes, ops, voices, bans,"
        " invites, extra FROM rooms ORDER BY name"
    )
    return [_room(row) for row in cur.fetchall()]


def _save_room(cur: sqlite3.Cursor, room: RoomRecord) -> None:
    # An upsert rather than INSERT OR REPLACE: REPLACE deletes the old row first, which would
    # fire ON DELETE CASCADE on any table a later migration hangs off rooms.
    cur.execute(
        "INSERT INTO rooms (name, owner, created_at, topic, topic_by, topic_at, modes, ops,"
        " voices, bans, invites, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,"
        " created_at = excluded.created_at, topic = excluded.topic,"
        " topic_by = excluded.topic_by, topic_at = excluded.topic_at, modes = excluded.modes,"
        " ops = excluded.ops, voices = excluded.voices, bans = excluded.bans,"
        " invites = excluded.invites, extra = excluded.extra",
        _room_row(room),
    )


def _delete_room(cur: sqlite3.Cursor, name: str) -> bool:
    cur.execute("DELETE FROM rooms WHERE name = ?", (name,))
    return cur.rowcount > 0


def _append(cur: sqlite3.Cursor, messages: Sequence[Message]) -> int:
    return _append_fields(cur, _messages_fields(messages))


def _query_messages(
    cur: sqlite3.Cursor, where: str, params: tuple[Any, ...], limit: int, newest: bool
) -> list[Message]:
    """Messages of one target matching ``where``: the ``limit`` newest if ``newest``, else the
    ``limit`` oldest; either way returned in ascending (ts, id) order."""
    _check_limit(limit)
    order = "DESC" if newest else "ASC"
    cur.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM history WHERE target = ?{where}"
        f" ORDER BY ts {order}, id {order} LIMIT ?",
        (*params, limit),
    )
    rows = cur.fetchall()
    if newest:
        rows.reverse()
    return [_message(row) for row in rows]


def _find(cur: sqlite3.Cursor, msgid: str) -> Message | None:
    cur.execute(f"SELECT {_MESSAGE_COLUMNS} FROM history WHERE id = ?", (msgid,))
    row = cur.fetchone()
    return None if row is None else _message(row)


def _targets(cur: sqlite3.Cursor, start: float, end: float, limit: int) -> list[tuple[str, float]]:
    _check_limit(limit)
    cur.execute(
        # A target belongs to the window when its latest message does: one that has been
        # spoken in since the window's end is not listed there.
        "SELECT target, MAX(ts) AS latest FROM history WHERE ts > ?"
        " GROUP BY target HAVING latest < ? ORDER BY latest, target LIMIT ?",
        (start, end, limit),
    )
    return [(target, latest) for target, latest in cur.fetchall()]


def _delete_message(cur: sqlite3.Cursor, msgid: str, owners: tuple[str, ...]) -> int:
    cur.execute("DELETE FROM history WHERE id = ?", (msgid,))
    deleted = cur.rowcount
    for owner in owners:
        # By (owner, id), which the table's unique index answers; the id alone would scan it.
        cur.execute("DELETE FROM private_history WHERE owner = ? AND id = ?", (owner, msgid))
        deleted += cur.rowcount
    return deleted


def _purge(cur: sqlite3.Cursor, target: str) -> int:
    cur.execute("DELETE FROM history WHERE target = ?", (target,))
    deleted = cur.rowcount
    room_events.purge(cur, target, "?")
    return deleted


def _private_message(row: Sequence[Any]) -> Message:
    msgid, target, ts, nick, ident, host, account, realname, kind, text, tags, stanza = row
    return Message(
        ts=ts,
        id=msgid,
        source=Who(nick, ident, host, account, realname),
        text=text,
        kind=kind,
        target=target,
        tags=tuple((key, value) for key, value in json.loads(tags)),
        native=None if stanza is None else StoredNative(stanza.encode("utf-8")),
    )


def _stanza(msg: Message) -> str | None:
    """The sender's own serialized message, when its protocol keeps one for recipients on
    the same protocol (an XMPP stanza, whole with its extensions), else None."""
    data = _stanza_bytes(msg)
    return None if data is None else _utf8(data.decode("utf-8", "replace"))


def _append_private(cur: sqlite3.Cursor, entries: Sequence[ArchiveEntry]) -> int:
    return _append_private_fields(cur, _private_fields(entries))


def _query_private(cur: sqlite3.Cursor, query: ArchiveQuery) -> list[Message]:
    """One page of an account's private archive, in ascending (ts, id) order."""
    where = ["owner = ?"]
    params: list[Any] = [query.owner]
    if query.peer is not None:
        where.append("peer = ?")
        params.append(query.peer)
    rows = _page(cur, f"SELECT {_PRIVATE_COLUMNS} FROM private_history", where, params, query)
    return [_private_message(row) for row in rows]


def _query_room(cur: sqlite3.Cursor, query: ArchiveQuery) -> list[Message]:
    """One page of a room's history (``query.owner`` is the room key), by (ts, id) anchors."""
    rows = _page(
        cur, f"SELECT {_MESSAGE_COLUMNS} FROM history", ["target = ?"], [query.owner], query
    )
    return [_message(row) for row in rows]


def _page(
    cur: sqlite3.Cursor, select: str, where: list[str], params: list[Any], query: ArchiveQuery
) -> list[Any]:
    """The rows of ``select`` matching ``where`` between the query's (ts, id) anchors, the
    oldest or the newest ``query.limit`` of them, in ascending (ts, id) order."""
    _check_limit(query.limit)
    if query.after is not None:
        where.append("(ts, id) > (?, ?)")
        params.extend(query.after)
    if query.before is not None:
        where.append("(ts, id) < (?, ?)")
        params.extend(query.before)
    order = "DESC" if query.newest else "ASC"
    cur.execute(
        f"{select} WHERE {' AND '.join(where)} ORDER BY ts {order}, id {order} LIMIT ?",
        (*params, query.limit),
    )
    rows = cur.fetchall()
    if query.newest:
        rows.reverse()
    return rows


def _find_private(cur: sqlite3.Cursor, owner: str, msgid: str) -> Message | None:
    cur.execute(
        f"SELECT {_PRIVATE_COLUMNS} FROM private_history WHERE owner = ? AND id = ?",
        (owner, msgid),
    )
    row = cur.fetchone()
    return None if row is None else _private_message(row)


def _private_targets(
    cur: sqlite3.Cursor, owner: str, start: float, end: float, limit: int
) -> list[tuple[str, float]]:
    _check_limit(limit)
    cur.execute(
        "SELECT peer, MAX(ts) AS latest FROM private_history WHERE owner = ? AND ts > ? AND ts < ?"
        " GROUP BY peer ORDER BY latest, peer LIMIT ?",
        (owner, start, end, limit),
    )
    return [(peer, latest) for peer, latest in cur.fetchall()]


def _take_offline(cur: sqlite3.Cursor, owner: str, limit: int) -> list[Message]:
    cur.execute(
        f"SELECT {_PRIVATE_COLUMNS} FROM private_history WHERE owner = ? AND offline = 1"
        " ORDER BY ts, id LIMIT ?",
        (owner, limit),
    )
    messages = [_private_message(row) for row in cur.fetchall()]
    cur.execute("UPDATE private_history SET offline = 0 WHERE owner = ? AND offline = 1", (owner,))
    return messages


def _mark_offline(cur: sqlite3.Cursor, owner: str, msgids: list[str]) -> int:
    cur.executemany(
        "UPDATE private_history SET offline = 1 WHERE owner = ? AND id = ?",
        [(owner, msgid) for msgid in msgids],
    )
    return len(msgids)


def _purge_private(cur: sqlite3.Cursor, owner: str, before: float | None) -> int:
    if before is None:
        cur.execute("DELETE FROM private_history WHERE owner = ?", (owner,))
    else:
        cur.execute("DELETE FROM private_history WHERE owner = ? AND ts < ?", (owner, before))
    deleted = cur.rowcount
    if before is None:
        cur.execute("DELETE FROM read_markers WHERE account = ?", (owner,))
    return deleted


def _purge_room_before(cur: sqlite3.Cursor, target: str, before: float) -> int:
    cur.execute("DELETE FROM history WHERE target = ? AND ts < ?", (target, before))
    deleted = cur.rowcount
    room_events.purge(cur, target, "?", before)
    return deleted


def _expire_batch(cur: sqlite3.Cursor, table: str, before: float, batch: int) -> int:
    """Delete up to ``batch`` of the oldest rows of ``table`` older than ``before``.

    Rows are scanned in insertion order (``seq``), which is time order: the scan stops at the
    first ``batch`` old rows without an index on ``ts`` that every write would pay for.
    """
    cur.execute(
        f"DELETE FROM {table} WHERE seq IN"
        f" (SELECT seq FROM {table} WHERE ts < ? ORDER BY seq LIMIT ?)",
        (before, batch),
    )
    return cur.rowcount


def _get_read_marker(cur: sqlite3.Cursor, account: str, target: str) -> float | None:
    cur.execute("SELECT ts FROM read_markers WHERE account = ? AND target = ?", (account, target))
    row = cur.fetchone()
    return None if row is None else float(row[0])


def _set_read_marker(cur: sqlite3.Cursor, account: str, target: str, ts: float) -> float:
    """Move the marker forward only; fire with where it is now."""
    cur.execute(
        "INSERT INTO read_markers (account, target, ts) VALUES (?, ?, ?)"
        " ON CONFLICT (account, target) DO UPDATE SET ts = MAX(ts, excluded.ts)",
        (account, target, ts),
    )
    return _get_read_marker(cur, account, target) or ts


def _get_roster(cur: sqlite3.Cursor, account: str) -> list[RosterItem]:
    cur.execute(
        "SELECT jid, name, groups, subscription, ask, pending_in, in_roster FROM roster_items"
        " WHERE account = ? ORDER BY jid",
        (account,),
    )
    return [
        RosterItem(
            jid=jid,
            name=name,
            groups=tuple(json.loads(groups)),
            subscription=subscription,
            ask=ask,
            pending_in=bool(pending_in),
            in_roster=bool(in_roster),
        )
        for jid, name, groups, subscription, ask, pending_in, in_roster in cur.fetchall()
    ]


def _set_roster_item(cur: sqlite3.Cursor, account: str, item: RosterItem) -> None:
    cur.execute(
        "INSERT OR REPLACE INTO roster_items (account, jid, name, groups, subscription, ask,"
        " pending_in, in_roster) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            account,
            item.jid,
            item.name,
            _dumps(list(item.groups)),
            item.subscription,
            item.ask,
            int(item.pending_in),
            int(item.in_roster),
        ),
    )


def _remove_roster_item(cur: sqlite3.Cursor, account: str, jid: str) -> bool:
    cur.execute("DELETE FROM roster_items WHERE account = ? AND jid = ?", (account, jid))
    return cur.rowcount > 0


def _load_blocks(cur: sqlite3.Cursor) -> list[tuple[str, str]]:
    cur.execute("SELECT account, name FROM blocks ORDER BY account, name")
    return [(account, name) for account, name in cur.fetchall()]


def _add_blocks(cur: sqlite3.Cursor, account: str, names: list[str]) -> None:
    cur.executemany(
        "INSERT OR IGNORE INTO blocks (account, name) VALUES (?, ?)",
        [(account, _utf8(name)) for name in names],
    )


def _remove_blocks(cur: sqlite3.Cursor, account: str, names: list[str]) -> None:
    cur.executemany(
        "DELETE FROM blocks WHERE account = ? AND name = ?",
        [(account, _utf8(name)) for name in names],
    )


def _get_pep(cur: sqlite3.Cursor, account: str) -> list[PepNode]:
    cur.execute(
        "SELECT kind, node, item_id, payload, published_at FROM pep_items WHERE account = ?"
        " ORDER BY seq",
        (account,),
    )
    items: dict[tuple[str, str], list[PepItem]] = {}
    for kind, node, item_id, payload, published_at in cur.fetchall():
        items.setdefault((kind, node), []).append(PepItem(item_id, payload, published_at))
    cur.execute(
        "SELECT kind, node, access_model, persist_items, max_items FROM pep_nodes"
        " WHERE account = ? ORDER BY kind, node",
        (account,),
    )
    return [
        PepNode(
            node=node,
            kind=kind,
            access_model=access_model,
            persist_items=bool(persist),
            max_items=max_items,
            items=tuple(items.get((kind, node), ())),
        )
        for kind, node, access_model, persist, max_items in cur.fetchall()
    ]


def _save_pep_node(cur: sqlite3.Cursor, account: str, node: PepNode) -> None:
    cur.execute(
        "INSERT INTO pep_nodes (account, kind, node, access_model, persist_items, max_items)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account, kind, node) DO UPDATE SET"
        " access_model = excluded.access_model, persist_items = excluded.persist_items,"
        " max_items = excluded.max_items",
        (
            account,
            node.kind,
            _utf8(node.node),
            node.access_model,
            int(node.persist_items),
            node.max_items,
        ),
    )
    # A node holds few items (the account's limits bound them): rewriting them keeps their
    # order without a second ordering scheme.
    cur.execute(
        "DELETE FROM pep_items WHERE account = ? AND kind = ? AND node = ?",
        (account, node.kind, _utf8(node.node)),
    )
    cur.executemany(
        "INSERT INTO pep_items (account, kind, node, item_id, payload, published_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                account,
                node.kind,
                _utf8(node.node),
                _utf8(item.id),
                _utf8(item.payload),
                item.published_at,
            )
            for item in node.items
        ],
    )


def _delete_pep_node(cur: sqlite3.Cursor, account: str, kind: str, node: str) -> bool:
    cur.execute(
        "DELETE FROM pep_nodes WHERE account = ? AND kind = ? AND node = ?",
        (account, kind, _utf8(node)),
    )
    return cur.rowcount > 0


def _load_server_bans(cur: sqlite3.Cursor) -> list[ServerBan]:
    cur.execute("SELECT mask, reason, set_by, set_at FROM server_bans ORDER BY set_at, mask")
    return [ServerBan(*row) for row in cur.fetchall()]


def _save_server_ban(cur: sqlite3.Cursor, ban: ServerBan) -> None:
    cur.execute(
        "INSERT OR REPLACE INTO server_bans (mask, reason, set_by, set_at) VALUES (?, ?, ?, ?)",
        (ban.mask, ban.reason, ban.set_by, ban.set_at),
    )


def _delete_server_ban(cur: sqlite3.Cursor, mask: str) -> bool:
    cur.execute("DELETE FROM server_bans WHERE mask = ?", (mask,))
    return cur.rowcount > 0


def _integrity_check(cur: sqlite3.Cursor) -> str:
    cur.execute("PRAGMA integrity_check")
    return "\n".join(str(row[0]) for row in cur.fetchall())


def _quick_check(cur: sqlite3.Cursor) -> list[str]:
    """The problems ``PRAGMA quick_check`` finds (empty when the file is sound).

    quick_check reads every page but skips the index-content comparison of integrity_check:
    it finds damaged pages in a fraction of the time, which matters at every start.
    """
    cur.execute(f"PRAGMA quick_check({QUICK_CHECK_ROWS:d})")
    rows = [str(row[0]) for row in cur.fetchall()]
    return [] if rows == ["ok"] else rows


def _probe_write(cur: sqlite3.Cursor) -> None:
    """Write the header's user_version back unchanged: a real write (SQLite does not skip it)
    that fails exactly when writes fail, and changes nothing."""
    cur.execute("PRAGMA user_version")
    (version,) = cur.fetchone()
    cur.execute(f"PRAGMA user_version = {int(version):d}")


def _backup(cur: sqlite3.Cursor, dest_path: str) -> None:
    # Copy to a temporary name and rename, so that dest_path is never a half-written database
    # (an interrupted backup must not replace the previous good one).
    tmp_path = dest_path + ".partial"
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp_path)
    dest = sqlite3.connect(tmp_path, isolation_level=None)
    try:
        # pages=-1 copies everything in one step under one read snapshot: a consistent copy.
        cur.connection.backup(dest, pages=-1)
        # The copy inherits WAL mode from the header; make it one self-contained file.
        dest.execute("PRAGMA journal_mode = DELETE")
    except BaseException:
        dest.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise
    dest.close()
    os.replace(tmp_path, dest_path)


@implementer(
    IAccountStore,
    IRoomStore,
    IHistoryStore,
    IServerBanStore,
    IBlockStore,
    IArchiveStore,
    IAccountSettingsStore,
)
class SqliteStore(StoreFacade):
    """Accounts, rooms and history in one SQLite file.  Call ``open()`` before anything else.

    Every method returns a Deferred that fires on the reactor thread; the SQL runs in the
    pool's single thread, in call order.
    """

    _queries = sys.modules[__name__]
    _param = "?"
    kind = "SQLite"
    is_storage_failure = staticmethod(_storage_failure)

    def __init__(
        self,
        path: str,
        *,
        reactor: Any = None,
        migrations: Sequence[Step] = MIGRATIONS,
        writer: bool = False,
    ) -> None:
        """``migrations`` is for tests of the migration machinery; production uses the default.

        With ``writer`` (the server's store), room and private history batches are written by
        a child process (:mod:`chatserver.storage.writer`) started by ``open()`` and stopped
        by ``close()``, outside this process and its GIL.  Without it (command-line tools,
        an in-memory database, which another process cannot open), this process's thread
        writes them.
        """
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self._migrations = tuple(migrations)
        if path != ":memory:":
            parent = os.path.dirname(os.path.abspath(path))
            os.makedirs(parent, exist_ok=True)
        # One connection: SQLite has one writer anyway, and a single thread keeps every
        # operation of this process in call order.
        pool = adbapi.ConnectionPool(
            "sqlite3",
            path,
            check_same_thread=False,
            cp_min=1,
            cp_max=1,
            cp_openfun=_configure_connection,
            cp_reactor=reactor,
        )
        super().__init__(path, reactor, pool)
        self._writer: WriterLink | None = None
        self._use_writer = writer and path != ":memory:"

    def _interaction(
        self, func: Callable[..., _T], args: tuple[Any, ...], write: bool, transaction: bool
    ) -> Callable[[sqlite3.Cursor], _T]:
        if not transaction:
            return lambda cur: func(cur, *args)

        def interaction(cur: sqlite3.Cursor) -> _T:
            with _transaction(cur, write=write):
                return func(cur, *args)

        return interaction

    def _submit(self, interaction: Callable[[sqlite3.Cursor], _T]) -> Deferred[_T]:
        writer = self._writer
        if writer is None:
            return self._pool.runInteraction(interaction)
        # After the history batches sent before it, as with one thread for everything: a
        # query sees what was said before it, a purge or a deletion follows the appends.
        d: Deferred[Any] = writer.settled()
        d.addCallback(lambda _: self._pool.runInteraction(interaction))
        return d

    # -- history through the writer process ---------------------------------------------------

    def append(self, messages: Iterable[Message]) -> Deferred[int]:
        writer = self._writer
        if writer is None:
            return super().append(messages)
        if self._closed:
            return defer.fail(StoreClosed(f"the store {self.path} is closed"))
        # Plain tuples, marshalled at once: the caller may reuse its batch as soon as this
        # returns, and the rows (JSON, checks) are built in the writer.
        rows = _messages_fields(messages)
        if not rows:
            return defer.succeed(0)
        return self._track(writer.send(HISTORY, rows), "append", True)

    def append_private(self, entries: Iterable[ArchiveEntry]) -> Deferred[int]:
        writer = self._writer
        if writer is None:
            return super().append_private(entries)
        if self._closed:
            return defer.fail(StoreClosed(f"the store {self.path} is closed"))
        rows = _private_fields(tuple(entries))
        if not rows:
            return defer.succeed(0)
        return self._track(writer.send(PRIVATE, rows), "append_private", True)

    def close(self) -> Deferred[None]:
        """Let the writer write what it was sent and exit, then close as the facade does."""
        writer, self._writer = self._writer, None
        if writer is None or self._closed:
            return super().close()
        d = writer.stop()
        d.addCallback(lambda _: super(SqliteStore, self).close())
        return d

    # -- lifecycle ------------------------------------------------------------------------

    def open(self, *, check: bool = False) -> Deferred[None]:
        """Bring the schema up to date.  Safe on a new file, an old one, or a current one.

        With ``check`` (the server's start), first make sure the file is sound and writable
        and errback with :class:`StoreUnusable` if not, before any migration touches it; and
        say when the file is new or was empty.
        """
        existed, size = self._file_state()
        d: Deferred[Any] = self._check() if check else defer.succeed(None)
        d.addCallback(
            lambda _: self._run(_migrate, self._migrations, write=True, transaction=False)
        )

        def done(versions: tuple[int, int]) -> None:
            before, after = versions
            if check and not existed:
                log.info("SQLite store {path}: created a new database", path=self.path)
            elif check and size == 0:
                log.warn(
                    "SQLite store {path}: the file was empty and is now a new, empty database;"
                    " if it should hold accounts and history, stop the server and restore a"
                    " backup",
                    path=self.path,
                )
            if before != after:
                log.info(
                    "SQLite store {path}: schema migrated from version {before} to {after}",
                    path=self.path,
                    before=before,
                    after=after,
                )

        d.addCallback(done)
        if self._use_writer:
            # Started once the schema is current: the writer only inserts.
            d.addCallback(lambda _: self._start_writer())
        return d

    def _start_writer(self) -> None:
        if self._writer is None and not self._closed:
            self._writer = WriterLink(self.path, self._reactor)
            self._writer.start()

    def _file_state(self) -> tuple[bool, int]:
        """(whether the database file exists, its size)."""
        if self.path == ":memory:" or self.path.startswith("file:"):
            return True, -1
        try:
            return True, os.stat(self.path).st_size
        except FileNotFoundError:
            return False, 0

    def _check(self) -> Deferred[None]:
        def damaged(problems: list[str]) -> None:
            if problems:
                raise StoreUnusable(
                    f"the database {self.path} is damaged ({'; '.join(problems)}); restore a"
                    " backup (chatserver restore) or repair it (sqlite3 .recover)"
                )

        def unusable(failure: Any) -> Any:
            if not failure.check(StorageUnavailable):
                return failure
            err = failure.value.error
            # A page too damaged to read stops quick_check itself with SQLITE_CORRUPT.
            if getattr(err, "sqlite_errorcode", 0) & 0xFF in _DAMAGED_CODES:
                damaged([str(err)])
            raise StoreUnusable(f"the database {self.path} cannot be used: {err}")

        def unwritable(failure: Any) -> Any:
            if not failure.check(StorageUnavailable):
                return failure
            raise StoreUnusable(
                f"the database {self.path} cannot be written ({failure.value.error}); check"
                " the permissions of the file and its directory, and the free space"
            )

        d: Deferred[Any] = self._run(_quick_check, write=False, transaction=False)
        d.addCallbacks(damaged, unusable)
        d.addCallback(lambda _: self._run(_probe_write, write=True))
        d.addErrback(unwritable)
        return d

    def schema_version(self) -> Deferred[int]:
        def read(cur: sqlite3.Cursor) -> int:
            cur.execute("PRAGMA user_version")
            return int(cur.fetchone()[0])

        return self._run(read, write=False)

    def integrity_check(self) -> Deferred[str]:
        """Fire with SQLite's verdict: ``"ok"``, or the problems found, one per line."""
        return self._run(_integrity_check, write=False, transaction=False)

    def backup(self, dest_path: str | os.PathLike[str]) -> Deferred[None]:
        """Write a consistent copy of the live database to ``dest_path`` (replacing it).

        The pool thread is busy for the whole copy, so other queries wait for it.
        """
        dest_path = os.fspath(dest_path)
        if os.path.realpath(dest_path) == os.path.realpath(self.path):
            # Renaming the copy over the live file under an open connection corrupts it.
            return defer.fail(ValueError(f"cannot back up {self.path} onto itself"))
        return self._run(_backup, dest_path, write=False, transaction=False)
