"""Move a community from an SQLite file to a PostgreSQL database, table by table.

Both schemas have the same tables and columns (see ``postgresql_migrations``), so the copy is
generic: every row of every table, in one PostgreSQL transaction, then a count of each table on
both sides.  Either every count matches and the transaction commits, or nothing is written.
Runs in a thread: it blocks on both databases.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import psycopg

from chatserver.storage.postgresql import _clean
from chatserver.storage.postgresql_migrations import TABLES


class CopyError(RuntimeError):
    """The copy was refused or failed; nothing was written to the target."""


def _source_tables(src: sqlite3.Connection) -> set[str]:
    rows = src.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    return {name for (name,) in rows}


def copy_sqlite_to_postgresql(
    sqlite_path: str, dsn: str, *, force: bool = False, progress: Callable[[str], None] = print
) -> dict[str, int]:
    """Copy every row of the (already migrated) SQLite database at ``sqlite_path`` into the
    (already migrated) PostgreSQL database ``dsn``; return the rows per table.

    Refuses a target that holds any row unless ``force``, which empties it first.
    """
    # Read-only, and one read transaction: a consistent snapshot even while a server writes.
    src = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True, isolation_level=None)
    try:
        src.execute("BEGIN")
        unknown = _source_tables(src) - {name for name, _seq in TABLES}
        if unknown:
            # Never leave data behind silently.
            raise CopyError(
                f"the SQLite file has tables this copy does not know: {', '.join(sorted(unknown))}"
            )
        with psycopg.connect(dsn) as dst:
            counts = _copy(src, dst, force, progress)
            dst.commit()
        return counts
    finally:
        src.close()


def _copy(
    src: sqlite3.Connection,
    dst: psycopg.Connection[Any],
    force: bool,
    progress: Callable[[str], None],
) -> dict[str, int]:
    present = {
        name: int(dst.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0])  # type: ignore[index]
        for name, _seq in TABLES
    }
    if any(present.values()):
        if not force:
            held = ", ".join(f"{name} {count}" for name, count in present.items() if count)
            raise CopyError(
                f"the target database is not empty ({held}); use --force to replace its content"
            )
        # Children are listed after their parents; CASCADE empties them all at once anyway.
        dst.execute("TRUNCATE " + ", ".join(name for name, _seq in TABLES) + " CASCADE")
    counts: dict[str, int] = {}
    for name, seq in TABLES:
        src_cur = src.execute(f"SELECT * FROM {name}")
        columns = [d[0] for d in src_cur.description]
        order = f" ORDER BY {seq}" if seq else ""
        src_cur = src.execute(f"SELECT {', '.join(columns)} FROM {name}{order}")
        with dst.cursor() as cur:
            with cur.copy(f"COPY {name} ({', '.join(columns)}) FROM STDIN") as copy:
                while rows := src_cur.fetchmany(1000):
                    for row in rows:
                        copy.write_row(_clean(row))
            if seq:
                # The next row stored gets the next number after the copied ones.
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{name}', '{seq}'),"
                    f" COALESCE((SELECT MAX({seq}) FROM {name}), 0) + 1, false)"
                )
        source_count = int(src.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0])
        target_count = int(dst.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0])  # type: ignore[index]
        if source_count != target_count:
            raise CopyError(
                f"{name}: {source_count} rows in the SQLite file but {target_count} copied;"
                " nothing was written"
            )
        counts[name] = target_count
        progress(f"  {name:<22} {target_count:>10}")
    return counts
