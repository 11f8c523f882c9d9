"""Per-account settings that outlive connections, for every backend: always-on membership and
message archive preferences.

The statements are the same on SQLite and PostgreSQL but for the parameter mark (``?`` or
``%s``), which each store passes in; each function runs on a cursor in the store's thread.
"""

from __future__ import annotations

import json
from typing import Any

from chatserver.core.records import AlwaysOnRecord, ArchivePrefs


def _sql(text: str, mark: str) -> str:
    return text if mark == "?" else text.replace("?", mark)


def load_always_on(cur: Any, mark: str) -> list[AlwaysOnRecord]:
    cur.execute(
        "SELECT a.account, a.nick, a.ident, a.host, a.realname, a.rooms, a.last_seen, acc.name"
        " FROM always_on a JOIN accounts acc ON acc.key = a.account ORDER BY a.account"
    )
    return [
        AlwaysOnRecord(
            account,
            nick,
            ident,
            host,
            realname,
            rooms=tuple(json.loads(rooms)),
            last_seen=last_seen,
            name=name,
        )
        for account, nick, ident, host, realname, rooms, last_seen, name in cur.fetchall()
    ]


def save_always_on(cur: Any, mark: str, record: AlwaysOnRecord) -> None:
    cur.execute(
        _sql(
            "INSERT INTO always_on (account, nick, ident, host, realname, rooms, last_seen)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account) DO UPDATE SET"
            " nick = excluded.nick, ident = excluded.ident, host = excluded.host,"
            " realname = excluded.realname, rooms = excluded.rooms,"
            " last_seen = excluded.last_seen",
            mark,
        ),
        (
            record.account,
            record.nick,
            record.ident,
            record.host,
            record.realname,
            json.dumps(list(record.rooms)),
            record.last_seen,
        ),
    )


def touch_always_on(cur: Any, mark: str, accounts: list[str], ts: float) -> None:
    cur.executemany(
        _sql("UPDATE always_on SET last_seen = ? WHERE account = ?", mark),
        [(ts, account) for account in accounts],
    )


def delete_always_on(cur: Any, mark: str, account: str) -> None:
    cur.execute(_sql("DELETE FROM always_on WHERE account = ?", mark), (account,))


def load_archive_prefs(cur: Any, mark: str) -> list[tuple[str, ArchivePrefs]]:
    cur.execute("SELECT account, default_mode, always, never FROM archive_prefs")
    return [
        (account, ArchivePrefs(default, tuple(json.loads(always)), tuple(json.loads(never))))
        for account, default, always, never in cur.fetchall()
    ]


def save_archive_prefs(cur: Any, mark: str, account: str, prefs: ArchivePrefs) -> None:
    cur.execute(
        _sql(
            "INSERT INTO archive_prefs (account, default_mode, always, never) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (account) DO UPDATE SET default_mode = excluded.default_mode,"
            " always = excluded.always, never = excluded.never",
            mark,
        ),
        (account, prefs.default, json.dumps(list(prefs.always)), json.dumps(list(prefs.never))),
    )
