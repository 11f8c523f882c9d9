"""The PostgreSQL storage backend: what SqliteStore keeps, in a PostgreSQL database.

Every query runs in the thread of an ``adbapi.ConnectionPool`` over psycopg 3 with exactly one
connection, so the reactor thread never waits for the database, and this process's operations
reach the server in call order (the core saves a room and may delete it before the save has
fired; two connections could apply them in the other order).  Several chatserver processes may
share the database; correctness between them rests on PostgreSQL's constraints and row locks,
not on the one-writer lock SQLite gives.

adbapi opens a transaction per operation (psycopg connections are not in autocommit), commits
it when the operation returns and rolls it back when it raises; with ``cp_reconnect`` a
connection that fails its rollback (the server restarted, the network dropped) is replaced by
a new one on the next operation, so the store recovers by itself once PostgreSQL is back.

Rows are converted by the SQLite backend's functions, so both backends store and return the
same records; only the SQL differs (``%s`` placeholders, ON CONFLICT instead of OR REPLACE,
no PRAGMA).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import psycopg
from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from chatserver.core.accounts import RegistrationInvite, not_invited
from chatserver.core.bans import ServerBan
from chatserver.core.errors import AccountError, StorageUnavailable
from chatserver.core.events import Message
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
    Credential,
    PepItem,
    PepNode,
    RoomRecord,
    RosterItem,
)
from chatserver.storage import room_events
from chatserver.storage.facade import SchemaTooNew, StoreFacade, StoreUnusable
from chatserver.storage.postgresql_migrations import MIGRATIONS
from chatserver.storage.sqlite import (
    _INVITE_COLUMNS,
    _MESSAGE_COLUMNS,
    _PRIVATE_COLUMNS,
    _check_limit,
    _credential_rows,
    _dumps,
    _message,
    _private_message,
    _room,
    _room_row,
    _stanza,
    _utf8,
)
from chatserver.storage.sqlite_rows import _messages_fields, _row_of

__all__ = ["PostgresStore", "describe_dsn", "is_storage_failure"]

_T = TypeVar("_T")

# Seconds to wait for a TCP connection to PostgreSQL: an unreachable server must fail the
# operation (and the user's login) soon, not after the kernel's minutes-long retry.
CONNECT_TIMEOUT = 5
# Any constant: the advisory lock that serializes migrations between processes.
_MIGRATION_LOCK = 0x63686174

log = Logger()


def is_storage_failure(err: BaseException) -> bool:
    """Whether ``err`` says the database is failing (unreachable, read-only, full), not that a
    statement broke a rule or the caller asked for the impossible."""
    if isinstance(err, adbapi.ConnectionLost):
        return True
    return isinstance(err, psycopg.Error) and not isinstance(
        err, (psycopg.IntegrityError, psycopg.ProgrammingError, psycopg.DataError)
    )


def describe_dsn(dsn: str) -> str:
    """``dsn`` without its password, for logs and messages."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(an unparsable dsn)"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    user = f"{parts['user']}@" if parts.get("user") else ""
    return f"postgresql://{user}{host}:{port}/{parts.get('dbname') or ''}"


def _text(value: Any) -> Any:
    """A value fit for a TEXT column: PostgreSQL refuses NUL in text, which SQLite stores.

    Replaced, not refused: one message with a NUL would otherwise fail the whole history batch
    it is in.  Other values pass unchanged.
    """
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def _clean(row: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(_text(value) for value in row)


# -- migrations ------------------------------------------------------------------------------


def _migrate_step(cur: Any, migrations: Sequence[Sequence[str]]) -> tuple[int, bool]:
    """Apply the next missing step, if any, in this transaction; return (the version found,
    whether a step was applied).

    The advisory lock is held until the transaction ends, so two processes opening a new
    database at once apply every step exactly once between them.
    """
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
    cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    cur.execute("SELECT version FROM schema_version")
    row = cur.fetchone()
    if row is None:
        cur.execute("INSERT INTO schema_version (version) VALUES (0)")
        version = 0
    else:
        version = int(row[0])
    if version > len(migrations):
        raise SchemaTooNew(
            f"database schema version {version} is newer than this chatserver's"
            f" ({len(migrations)}); upgrade chatserver"
        )
    if version == len(migrations):
        return version, False
    for statement in migrations[version]:
        cur.execute(statement)
    cur.execute("UPDATE schema_version SET version = %s", (version + 1,))
    return version, True


def _schema_version(cur: Any) -> int:
    cur.execute("SELECT version FROM schema_version")
    row = cur.fetchone()
    return 0 if row is None else int(row[0])


def _probe_write(cur: Any) -> None:
    """A real write (a row version is written) that changes nothing."""
    cur.execute("UPDATE schema_version SET version = version")


# -- interactions (each runs in the pool thread, inside one transaction) ---------------------


def _registered_keys(cur: Any, keys: Sequence[str]) -> set[str]:
    if not keys:
        return set()
    cur.execute("SELECT key FROM accounts WHERE key = ANY(%s)", (list(keys),))
    return {key for (key,) in cur.fetchall()}


def _account_keys(cur: Any) -> list[str]:
    cur.execute("SELECT key FROM accounts")
    return [key for (key,) in cur.fetchall()]


def _get_account(cur: Any, key: str) -> AccountRecord | None:
    cur.execute("SELECT name, created_at, email FROM accounts WHERE key = %s", (key,))
    row = cur.fetchone()
    if row is None:
        return None
    name, created_at, email = row
    cur.execute(
        "SELECT mechanism, salt, stored_key, server_key, iterations FROM credentials"
        " WHERE account = %s ORDER BY seq",
        (key,),
    )
    creds = tuple(
        Credential(m, bytes(s), bytes(k), bytes(v), i) for m, s, k, v, i in cur.fetchall()
    )
    return AccountRecord(name=name, credentials=creds, created_at=created_at, email=email)


_INSERT_CREDENTIALS = (
    "INSERT INTO credentials (account, mechanism, seq, salt, stored_key, server_key,"
    " iterations) VALUES (%s, %s, %s, %s, %s, %s, %s)"
)


def _create_account(cur: Any, record: AccountRecord) -> None:
    key = casefold(record.name)
    # The primary key decides between two processes creating the same name at once: the
    # second insert waits for the first transaction and then fails.
    cur.execute(
        "INSERT INTO accounts (key, name, created_at, email) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (key) DO NOTHING",
        _clean((key, record.name, record.created_at, record.email)),
    )
    if cur.rowcount == 0:
        cur.execute("SELECT name FROM accounts WHERE key = %s", (key,))
        row = cur.fetchone()
        raise AccountError(
            AccountError.EXISTS, f"the account {row[0] if row else record.name} already exists"
        )
    cur.executemany(_INSERT_CREDENTIALS, _credential_rows(key, record.credentials))


def _update_credentials(cur: Any, key: str, credentials: Sequence[Credential]) -> bool:
    # FOR UPDATE: a concurrent delete of the account waits for this transaction.
    cur.execute("SELECT 1 FROM accounts WHERE key = %s FOR UPDATE", (key,))
    if cur.fetchone() is None:
        return False
    cur.execute("DELETE FROM credentials WHERE account = %s", (key,))
    cur.executemany(_INSERT_CREDENTIALS, _credential_rows(key, credentials))
    return True


def _delete_account(cur: Any, key: str) -> bool:
    cur.execute("DELETE FROM accounts WHERE key = %s", (key,))
    existed = bool(cur.rowcount > 0)
    # The account's private archive and read positions go with it, in the same transaction.
    cur.execute("DELETE FROM private_history WHERE owner = %s", (key,))
    cur.execute("DELETE FROM read_markers WHERE account = %s", (key,))
    return existed


def _list_accounts(cur: Any) -> list[AccountRecord]:
    creds: dict[str, list[Credential]] = {}
    cur.execute(
        "SELECT account, mechanism, salt, stored_key, server_key, iterations FROM credentials"
        " ORDER BY account, seq"
    )
    for key, mechanism, salt, stored, server, iterations in cur.fetchall():
        creds.setdefault(key, []).append(
            Credential(mechanism, bytes(salt), bytes(stored), bytes(server), iterations)
        )
    cur.execute("SELECT key, name, created_at, email FROM accounts ORDER BY key")
    return [
        AccountRecord(
            name=name, credentials=tuple(creds.get(key, ())), created_at=created_at, email=email
        )
        for key, name, created_at, email in cur.fetchall()
    ]


def _create_invited_account(cur: Any, record: AccountRecord, now: float) -> None:
    # The row lock taken by DELETE makes a second registration for the same invitation wait,
    # then find nothing to delete; a failing insert rolls the deletion back.
    cur.execute(
        "DELETE FROM registration_invites WHERE key = %s AND expires_at > %s",
        (casefold(record.name), now),
    )
    if cur.rowcount == 0:
        raise not_invited()
    _create_account(cur, record)


def _save_invite(cur: Any, invite: RegistrationInvite) -> None:
    _purge_invites(cur, invite.created_at)
    cur.execute(
        f"INSERT INTO registration_invites (key, {_INVITE_COLUMNS})"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET name = excluded.name,"
        " invited_by = excluded.invited_by, created_at = excluded.created_at,"
        " expires_at = excluded.expires_at",
        _clean(
            (
                casefold(invite.name),
                invite.name,
                invite.invited_by,
                invite.created_at,
                invite.expires_at,
            )
        ),
    )


def _get_invite(cur: Any, key: str, now: float) -> RegistrationInvite | None:
    cur.execute(
        f"SELECT {_INVITE_COLUMNS} FROM registration_invites WHERE key = %s AND expires_at > %s",
        (key, now),
    )
    row = cur.fetchone()
    return None if row is None else RegistrationInvite(*row)


def _delete_invite(cur: Any, key: str) -> bool:
    cur.execute("DELETE FROM registration_invites WHERE key = %s", (key,))
    return bool(cur.rowcount > 0)


def _purge_invites(cur: Any, now: float) -> int:
    cur.execute("DELETE FROM registration_invites WHERE expires_at <= %s", (now,))
    return int(cur.rowcount)


def _list_invites(cur: Any, now: float) -> list[RegistrationInvite]:
    _purge_invites(cur, now)
    cur.execute(f"SELECT {_INVITE_COLUMNS} FROM registration_invites ORDER BY key")
    return [RegistrationInvite(*row) for row in cur.fetchall()]


def _load_rooms(cur: Any) -> list[RoomRecord]:
    cur.execute(
        "SELECT name, owner, created_at, topic, topic_by, topic_at, modes, ops, voices, bans,"
        " invites, extra FROM rooms ORDER BY name"
    )
    return [_room(row) for row in cur.fetchall()]


def _save_room(cur: Any, room: RoomRecord) -> None:
    cur.execute(
        "INSERT INTO rooms (name, owner, created_at, topic, topic_by, topic_at, modes, ops,"
        " voices, bans, invites, extra) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,"
        " created_at = excluded.created_at, topic = excluded.topic,"
        " topic_by = excluded.topic_by, topic_at = excluded.topic_at, modes = excluded.modes,"
        " ops = excluded.ops, voices = excluded.voices, bans = excluded.bans,"
        " invites = excluded.invites, extra = excluded.extra",
        _clean(_room_row(room)),
    )


def _delete_room(cur: Any, name: str) -> bool:
    cur.execute("DELETE FROM rooms WHERE name = %s", (name,))
    return bool(cur.rowcount > 0)


# History rows reach PostgreSQL as one JSON array of row arrays per batch, unpacked by
# jsonb_array_elements into a single INSERT ... SELECT.  Measured against the multi-row VALUES
# INSERT it replaces (11 parameters a row, each adapted by psycopg in Python), binary COPY into
# a staging table and unnest() of 11 array parameters: the json module's C encoder made it the
# cheapest for this process (about 2.5 µs a row at 1000-row batches against 33, 6 against 50 at
# 100) and no dearer for PostgreSQL, with one statement and no per-connection state.
_HISTORY_TYPES = {"ts": "float8"}
_PRIVATE_TYPES = {"ts": "float8", "offline": "integer"}


def _json_insert(table: str, columns: str, types: dict[str, str], conflict: str) -> str:
    """The INSERT of one batch of ``table`` rows, passed as a JSON array of arrays whose values
    are ``columns`` in order; rows in array order (so ``seq`` follows it), those already
    stored skipped."""
    values = ", ".join(
        f"(r->>{i})::{types[name]}" if name in types else f"r->>{i}"
        for i, name in enumerate(columns.split(", "))
    )
    return (
        f"INSERT INTO {table} ({columns}) SELECT {values}"
        " FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS batch (r, n) ORDER BY n"
        f" ON CONFLICT ({conflict}) DO NOTHING"
    )


def _json_value(value: Any) -> Any:
    """A value JSON and the column can take: NUL replaced in text (see :func:`_text`), and a
    float JSON has no number for (NaN, infinities) as the text float8 reads back."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return _text(value)


def _json_rows(rows: Sequence[Sequence[Any]]) -> str:
    """``rows`` as the JSON parameter of :func:`_json_insert`'s statement."""
    payload = json.dumps(rows, ensure_ascii=False, separators=(",", ":"))
    # One scan of the whole payload, not a check per value: a NUL (escaped by the encoder)
    # or a non-finite float is rare enough that any hint of one (also matched by such words
    # in message text) just sends the batch through the per-value path.
    if "\\u0000" in payload or "NaN" in payload or "Infinity" in payload:
        payload = json.dumps(
            [[_json_value(value) for value in row] for row in rows],
            ensure_ascii=False,
            separators=(",", ":"),
        )
    return payload


# Rows per statement: a batch held through a long outage (up to history_unstored_limit
# messages) must not become one parameter beyond what PostgreSQL takes (1 GB, and 256 MB for
# a jsonb value); 5,000 rows stay within a few MB and cost no more per row than larger ones.
_JSON_BATCH_ROWS = 5000


def _insert_rows(cur: Any, sql: str, rows: Sequence[Sequence[Any]]) -> int:
    """Insert ``rows`` with :func:`_json_insert`'s ``sql``; return how many were new."""
    stored = 0
    for start in range(0, len(rows), _JSON_BATCH_ROWS):
        cur.execute(sql, (_json_rows(rows[start : start + _JSON_BATCH_ROWS]),))
        stored += int(cur.rowcount)
    return stored


_APPEND_SQL = _json_insert("history", _MESSAGE_COLUMNS, _HISTORY_TYPES, "id")


def _append(cur: Any, messages: Sequence[Message]) -> int:
    return _insert_rows(
        cur, _APPEND_SQL, [_row_of(fields) for fields in _messages_fields(messages)]
    )


def _query_messages(
    cur: Any, where: str, params: tuple[Any, ...], limit: int, newest: bool
) -> list[Message]:
    _check_limit(limit)
    order = "DESC" if newest else "ASC"
    cur.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM history WHERE target = %s{where}"
        f" ORDER BY ts {order}, id {order} LIMIT %s",
        (*params, limit),
    )
    rows = cur.fetchall()
    if newest:
        rows.reverse()
    return [_message(row) for row in rows]


def _find(cur: Any, msgid: str) -> Message | None:
    cur.execute(f"SELECT {_MESSAGE_COLUMNS} FROM history WHERE id = %s", (msgid,))
    row = cur.fetchone()
    return None if row is None else _message(row)


def _targets(cur: Any, start: float, end: float, limit: int) -> list[tuple[str, float]]:
    _check_limit(limit)
    cur.execute(
        "SELECT target, MAX(ts) AS latest FROM history WHERE ts > %s"
        " GROUP BY target HAVING MAX(ts) < %s ORDER BY latest, target LIMIT %s",
        (start, end, limit),
    )
    return [(target, latest) for target, latest in cur.fetchall()]


_APPEND_PRIVATE_SQL = _json_insert(
    "private_history", f"owner, peer, offline, {_PRIVATE_COLUMNS}", _PRIVATE_TYPES, "owner, id"
)


def _append_private(cur: Any, entries: Sequence[ArchiveEntry]) -> int:
    fields = _messages_fields([entry.message for entry in entries])
    rows = [
        (entry.owner, entry.peer, 1 if entry.offline else 0, *_row_of(row), _stanza(entry.message))
        for entry, row in zip(entries, fields, strict=True)
    ]
    return _insert_rows(cur, _APPEND_PRIVATE_SQL, rows)


def _page(cur: Any, table: str, key: str, query: ArchiveQuery) -> list[Any]:
    _check_limit(query.limit)
    where = [f"{key} = %s"]
    params: list[Any] = [query.owner]
    if table == "private_history" and query.peer is not None:
        where.append("peer = %s")
        params.append(query.peer)
    if query.after is not None:
        where.append("(ts, id) > (%s, %s)")
        params.extend(query.after)
    if query.before is not None:
        where.append("(ts, id) < (%s, %s)")
        params.extend(query.before)
    order = "DESC" if query.newest else "ASC"
    columns = _PRIVATE_COLUMNS if table == "private_history" else _MESSAGE_COLUMNS
    cur.execute(
        f"SELECT {columns} FROM {table} WHERE {' AND '.join(where)}"
        f" ORDER BY ts {order}, id {order} LIMIT %s",
        (*params, query.limit),
    )
    rows = cur.fetchall()
    if query.newest:
        rows.reverse()
    return rows


def _query_private(cur: Any, query: ArchiveQuery) -> list[Message]:
    return [_private_message(row) for row in _page(cur, "private_history", "owner", query)]


def _query_room(cur: Any, query: ArchiveQuery) -> list[Message]:
    return [_message(row) for row in _page(cur, "history", "target", query)]


def _find_private(cur: Any, owner: str, msgid: str) -> Message | None:
    cur.execute(
        f"SELECT {_PRIVATE_COLUMNS} FROM private_history WHERE owner = %s AND id = %s",
        (owner, msgid),
    )
    row = cur.fetchone()
    return None if row is None else _private_message(row)


def _private_targets(
    cur: Any, owner: str, start: float, end: float, limit: int
) -> list[tuple[str, float]]:
    _check_limit(limit)
    cur.execute(
        "SELECT peer, MAX(ts) AS latest FROM private_history"
        " WHERE owner = %s AND ts > %s AND ts < %s"
        " GROUP BY peer ORDER BY latest, peer LIMIT %s",
        (owner, start, end, limit),
    )
    return [(peer, latest) for peer, latest in cur.fetchall()]


def _take_offline(cur: Any, owner: str, limit: int) -> list[Message]:
    cur.execute(
        f"SELECT {_PRIVATE_COLUMNS} FROM private_history WHERE owner = %s AND offline = 1"
        " ORDER BY ts, id LIMIT %s",
        (owner, limit),
    )
    messages = [_private_message(row) for row in cur.fetchall()]
    cur.execute("UPDATE private_history SET offline = 0 WHERE owner = %s AND offline = 1", (owner,))
    return messages


def _mark_offline(cur: Any, owner: str, msgids: list[str]) -> int:
    cur.executemany(
        "UPDATE private_history SET offline = 1 WHERE owner = %s AND id = %s",
        [(owner, msgid) for msgid in msgids],
    )
    return len(msgids)


def _purge_private(cur: Any, owner: str, before: float | None) -> int:
    if before is None:
        cur.execute("DELETE FROM private_history WHERE owner = %s", (owner,))
    else:
        cur.execute("DELETE FROM private_history WHERE owner = %s AND ts < %s", (owner, before))
    deleted = int(cur.rowcount)
    if before is None:
        cur.execute("DELETE FROM read_markers WHERE account = %s", (owner,))
    return deleted


def _purge_room_before(cur: Any, target: str, before: float) -> int:
    cur.execute("DELETE FROM history WHERE target = %s AND ts < %s", (target, before))
    deleted = int(cur.rowcount)
    room_events.purge(cur, target, "%s", before)
    return deleted


def _expire_batch(cur: Any, table: str, before: float, batch: int) -> int:
    cur.execute(
        f"DELETE FROM {table} WHERE seq IN"
        f" (SELECT seq FROM {table} WHERE ts < %s ORDER BY seq LIMIT %s)",
        (before, batch),
    )
    return int(cur.rowcount)


def _get_read_marker(cur: Any, account: str, target: str) -> float | None:
    cur.execute("SELECT ts FROM read_markers WHERE account = %s AND target = %s", (account, target))
    row = cur.fetchone()
    return None if row is None else float(row[0])


def _set_read_marker(cur: Any, account: str, target: str, ts: float) -> float:
    cur.execute(
        "INSERT INTO read_markers (account, target, ts) VALUES (%s, %s, %s)"
        " ON CONFLICT (account, target) DO UPDATE"
        " SET ts = GREATEST(read_markers.ts, excluded.ts)",
        (account, target, ts),
    )
    return _get_read_marker(cur, account, target) or ts


def _delete_message(cur: Any, msgid: str, owners: tuple[str, ...]) -> int:
    cur.execute("DELETE FROM history WHERE id = %s", (msgid,))
    deleted = int(cur.rowcount)
    if owners:
        cur.execute(
            "DELETE FROM private_history WHERE owner = ANY(%s) AND id = %s", (list(owners), msgid)
        )
        deleted += int(cur.rowcount)
    return deleted


def _purge(cur: Any, target: str) -> int:
    cur.execute("DELETE FROM history WHERE target = %s", (target,))
    deleted = int(cur.rowcount)
    room_events.purge(cur, target, "%s")
    return deleted


def _get_roster(cur: Any, account: str) -> list[RosterItem]:
    cur.execute(
        "SELECT jid, name, groups, subscription, ask, pending_in, in_roster FROM roster_items"
        " WHERE account = %s ORDER BY jid",
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


def _set_roster_item(cur: Any, account: str, item: RosterItem) -> None:
    cur.execute(
        "INSERT INTO roster_items (account, jid, name, groups, subscription, ask, pending_in,"
        " in_roster) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (account, jid)"
        " DO UPDATE SET name = excluded.name, groups = excluded.groups,"
        " subscription = excluded.subscription, ask = excluded.ask,"
        " pending_in = excluded.pending_in, in_roster = excluded.in_roster",
        _clean(
            (
                account,
                item.jid,
                item.name,
                _dumps(list(item.groups)),
                item.subscription,
                item.ask,
                int(item.pending_in),
                int(item.in_roster),
            )
        ),
    )


def _remove_roster_item(cur: Any, account: str, jid: str) -> bool:
    cur.execute("DELETE FROM roster_items WHERE account = %s AND jid = %s", (account, jid))
    return bool(cur.rowcount > 0)


def _load_blocks(cur: Any) -> list[tuple[str, str]]:
    cur.execute("SELECT account, name FROM blocks ORDER BY account, name")
    return [(account, name) for account, name in cur.fetchall()]


def _add_blocks(cur: Any, account: str, names: list[str]) -> None:
    cur.executemany(
        "INSERT INTO blocks (account, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        [(account, _text(_utf8(name))) for name in names],
    )


def _remove_blocks(cur: Any, account: str, names: list[str]) -> None:
    cur.executemany(
        "DELETE FROM blocks WHERE account = %s AND name = %s",
        [(account, _text(_utf8(name))) for name in names],
    )


def _get_pep(cur: Any, account: str) -> list[PepNode]:
    cur.execute(
        "SELECT kind, node, item_id, payload, published_at FROM pep_items WHERE account = %s"
        " ORDER BY seq",
        (account,),
    )
    items: dict[tuple[str, str], list[PepItem]] = {}
    for kind, node, item_id, payload, published_at in cur.fetchall():
        items.setdefault((kind, node), []).append(PepItem(item_id, payload, published_at))
    cur.execute(
        "SELECT kind, node, access_model, persist_items, max_items FROM pep_nodes"
        " WHERE account = %s ORDER BY kind, node",
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


def _save_pep_node(cur: Any, account: str, node: PepNode) -> None:
    name = _text(_utf8(node.node))
    cur.execute(
        "INSERT INTO pep_nodes (account, kind, node, access_model, persist_items, max_items)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (account, kind, node) DO UPDATE SET"
        " access_model = excluded.access_model, persist_items = excluded.persist_items,"
        " max_items = excluded.max_items",
        (account, node.kind, name, node.access_model, int(node.persist_items), node.max_items),
    )
    cur.execute(
        "DELETE FROM pep_items WHERE account = %s AND kind = %s AND node = %s",
        (account, node.kind, name),
    )
    cur.executemany(
        "INSERT INTO pep_items (account, kind, node, item_id, payload, published_at)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        [
            _clean(
                (account, node.kind, name, _utf8(item.id), _utf8(item.payload), item.published_at)
            )
            for item in node.items
        ],
    )


def _delete_pep_node(cur: Any, account: str, kind: str, node: str) -> bool:
    cur.execute(
        "DELETE FROM pep_nodes WHERE account = %s AND kind = %s AND node = %s",
        (account, kind, _text(_utf8(node))),
    )
    return bool(cur.rowcount > 0)


def _load_server_bans(cur: Any) -> list[ServerBan]:
    cur.execute("SELECT mask, reason, set_by, set_at FROM server_bans ORDER BY set_at, mask")
    return [ServerBan(*row) for row in cur.fetchall()]


def _save_server_ban(cur: Any, ban: ServerBan) -> None:
    cur.execute(
        "INSERT INTO server_bans (mask, reason, set_by, set_at) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (mask) DO UPDATE SET reason = excluded.reason, set_by = excluded.set_by,"
        " set_at = excluded.set_at",
        _clean((ban.mask, ban.reason, ban.set_by, ban.set_at)),
    )


def _delete_server_ban(cur: Any, mask: str) -> bool:
    cur.execute("DELETE FROM server_bans WHERE mask = %s", (mask,))
    return bool(cur.rowcount > 0)


def _configure_connection(conn: psycopg.Connection[Any]) -> None:
    """``cp_openfun``: every timestamp column is a float, so the session's time zone and
    datestyle do not matter; only say who we are in pg_stat_activity."""
    conn.execute("SET application_name = 'chatserver'")
    conn.commit()


class _Connection(adbapi.Connection):
    """adbapi's connection wrapper, without its logged tracebacks for a lost connection.

    When the server goes away, every operation's rollback fails; adbapi would log two
    tracebacks per operation on top of the store's own one line.  The connection is dropped
    the same way (the next operation opens a new one) and the operation's own error still
    reaches its caller.
    """

    def rollback(self) -> None:
        conn = self._connection
        try:
            conn.rollback()
        except psycopg.Error:
            self._pool.disconnect(conn)
            return
        if conn.broken or conn.closed:
            self._pool.disconnect(conn)


@implementer(
    IAccountStore,
    IRoomStore,
    IHistoryStore,
    IServerBanStore,
    IBlockStore,
    IArchiveStore,
    IAccountSettingsStore,
)
class PostgresStore(StoreFacade):
    """Accounts, rooms, history, rosters, bans and PEP data in a PostgreSQL database.  Call
    ``open()`` before anything else.

    Every method returns a Deferred that fires on the reactor thread; the SQL runs in the
    pool's single thread, in call order.
    """

    _queries = sys.modules[__name__]
    _param = "%s"
    kind = "PostgreSQL"
    is_storage_failure = staticmethod(is_storage_failure)

    def __init__(
        self, dsn: str, *, reactor: Any = None, migrations: Sequence[Sequence[str]] = MIGRATIONS
    ) -> None:
        """``migrations`` is for tests of the migration machinery; production uses the default."""
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.dsn = dsn
        self._migrations = tuple(migrations)
        pool = adbapi.ConnectionPool(
            "psycopg",
            dsn,
            connect_timeout=CONNECT_TIMEOUT,
            cp_min=1,
            cp_max=1,
            cp_openfun=_configure_connection,
            cp_reconnect=True,
            cp_noisy=False,
            cp_reactor=reactor,
        )
        pool.connectionFactory = _Connection
        # What logs and errors show as the store's path: the dsn without its password.
        super().__init__(describe_dsn(dsn), reactor, pool)

    # -- lifecycle ------------------------------------------------------------------------

    async def _open(self, check: bool) -> None:
        first: int | None = None
        version = 0
        try:
            while True:
                version, applied = await self._run(_migrate_step, self._migrations, write=True)
                if first is None:
                    first = version
                if not applied:
                    break
                version += 1
            if check:
                await self._run(_probe_write, write=True)
        except StorageUnavailable as err:
            if not check:
                raise
            raise StoreUnusable(
                f"the PostgreSQL database {self.path} cannot be used"
                f" ({str(err.error).strip()}); check that the server runs, the database"
                " exists and the user may write it"
            ) from err
        if first is not None and first != version:
            log.info(
                "PostgreSQL store {path}: schema migrated from version {before} to {after}",
                path=self.path,
                before=first,
                after=version,
            )

    def open(self, *, check: bool = False) -> Deferred[None]:
        """Bring the schema up to date.  Safe on an empty database, an old one, or a current one.

        With ``check`` (the server's start), errback with :class:`StoreUnusable` when the
        database cannot be reached or written.
        """
        return defer.ensureDeferred(self._open(check))

    def schema_version(self) -> Deferred[int]:
        return self._run(_schema_version, write=False)
