"""Room events kept in history (joins, parts, quits, kicks, nick changes, topics), the same
on both backends: each function takes a DB-API cursor and the backend's placeholder.

They live in their own table, apart from messages: every reader of messages (join replay,
MAM, line chat's history) stays as it is, and only CHATHISTORY with draft/event-playback
reads both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chatserver.core.events import Who
from chatserver.core.records import ArchiveQuery, RoomEventRecord

COLUMNS = "id, target, ts, kind, nick, ident, host, account, realname, text, object"
# The most rows one query may return (the same guard as the message queries').
MAX_LIMIT = 10_000


def _clean(value: Any) -> Any:
    """Text fit for any backend: no NUL (PostgreSQL refuses it), no lone surrogates."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
        if not value.isascii():
            value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _row(record: RoomEventRecord) -> tuple[Any, ...]:
    who = record.who
    row = (
        record.id,
        record.room,
        record.ts,
        record.kind,
        who.nick,
        who.ident,
        who.host,
        who.account,
        who.realname,
        record.text,
        record.object,
    )
    return tuple(_clean(value) for value in row)


def _record(row: Sequence[Any]) -> RoomEventRecord:
    msgid, room, ts, kind, nick, ident, host, account, realname, text, obj = row
    return RoomEventRecord(
        id=msgid,
        room=room,
        ts=float(ts),
        kind=kind,
        who=Who(nick, ident, host, account, realname),
        text=text,
        object=obj,
    )


def append(cur: Any, records: Sequence[RoomEventRecord], mark: str) -> int:
    marks = ", ".join([mark] * len(COLUMNS.split(", ")))
    sql = f"INSERT INTO room_events ({COLUMNS}) VALUES ({marks}) ON CONFLICT (id) DO NOTHING"
    stored = 0
    for record in records:
        cur.execute(sql, _row(record))
        stored += max(int(cur.rowcount), 0)
    return stored


def query(cur: Any, q: ArchiveQuery, mark: str) -> list[RoomEventRecord]:
    """A page of the events of the room ``q.owner`` between the (ts, id) anchors, the oldest
    or newest ``q.limit``, in ascending (ts, id) order."""
    if not 0 < q.limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}")
    where = [f"target = {mark}"]
    params: list[Any] = [q.owner]
    if q.after is not None:
        where.append(f"(ts, id) > ({mark}, {mark})")
        params.extend(q.after)
    if q.before is not None:
        where.append(f"(ts, id) < ({mark}, {mark})")
        params.extend(q.before)
    order = "DESC" if q.newest else "ASC"
    cur.execute(
        f"SELECT {COLUMNS} FROM room_events WHERE {' AND '.join(where)}"
        f" ORDER BY ts {order}, id {order} LIMIT {mark}",
        (*params, q.limit),
    )
    rows = cur.fetchall()
    if q.newest:
        rows.reverse()
    return [_record(row) for row in rows]


def find(cur: Any, msgid: str, mark: str) -> RoomEventRecord | None:
    cur.execute(f"SELECT {COLUMNS} FROM room_events WHERE id = {mark}", (msgid,))
    row = cur.fetchone()
    return None if row is None else _record(row)


def purge(cur: Any, target: str, mark: str, before: float | None = None) -> int:
    if before is None:
        cur.execute(f"DELETE FROM room_events WHERE target = {mark}", (target,))
    else:
        cur.execute(
            f"DELETE FROM room_events WHERE target = {mark} AND ts < {mark}", (target, before)
        )
    return max(int(cur.rowcount), 0)


def rename_target(cur: Any, old: str, new: str, mark: str) -> int:
    """A renamed room's history, events and read positions go to its new key; fires with
    how many messages moved.  Read positions of an older room of the new name give way."""
    cur.execute(f"UPDATE history SET target = {mark} WHERE target = {mark}", (new, old))
    moved = max(int(cur.rowcount), 0)
    cur.execute(f"UPDATE room_events SET target = {mark} WHERE target = {mark}", (new, old))
    cur.execute(f"DELETE FROM read_markers WHERE target = {mark}", ("#" + new,))
    cur.execute(
        f"UPDATE read_markers SET target = {mark} WHERE target = {mark}", ("#" + new, "#" + old)
    )
    return moved
