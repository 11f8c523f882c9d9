"""The SQLite history writer: a child process that writes room and private history batches.

Run as ``python -m chatserver.storage.writer DATABASE`` by :mod:`chatserver.storage.writer_link`,
which feeds it through its stdin and reads its acknowledgements from its stdout.  The inserts
(building rows, JSON of tags, SQLite's own work) then run outside the serving process and its
GIL; the serving process only builds plain tuples and marshals them, once per flush.

Frames both ways are a 4-byte little-endian length and a :mod:`marshal` payload: marshal is
the standard library's fastest encoder of tuples of str/float/None/bytes, keeps lone surrogates
(which the rows then replace), and both ends run the same interpreter, so its format matches.

- batch (server -> writer): ``(seq, kind, rows)``, ``kind`` one of :data:`KINDS`;
- acknowledgement (writer -> server), one per batch in the order received:
  ``(seq, stored, None)`` once the batch is committed, or ``(seq, 0, (class name, message,
  SQLite error code))`` once it is rolled back.

What a crash may lose: the writer commits every whole batch it has read, also after the
server died (it exits only when its stdin closes, and ignores SIGINT and SIGTERM, which a
terminal or a service manager sends to the whole group, so as to drain first).  Only what the
server had not yet written to the pipe is lost with the server.  A writer that dies loses
nothing acknowledged: the server sends every unacknowledged batch again to the next one, and
the tables' unique ids make a batch written twice count once.
"""

from __future__ import annotations

import marshal
import os
import signal
import sqlite3
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

from chatserver.storage import sqlite_rows

HEADER = struct.Struct("<I")
HISTORY, PRIVATE = 0, 1
# Batch kinds and the interaction that writes each (the same the store's thread would run).
KINDS: dict[int, Callable[[sqlite3.Cursor, Sequence[Any]], int]] = {
    HISTORY: sqlite_rows._append_fields,
    PRIVATE: sqlite_rows._append_private_fields,
}
# Stdout and stdin, by number: the frames are read and written unbuffered.
_IN, _OUT = 0, 1


def frame(payload: Any) -> bytes:
    data = marshal.dumps(payload)
    return HEADER.pack(len(data)) + data


def _read_exact(size: int) -> bytes | None:
    """``size`` bytes from stdin, or None at its end (a frame cut short counts as none: its
    sender died while writing it and was never told it was stored)."""
    parts = []
    while size:
        chunk = os.read(_IN, min(size, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


def _send(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(_OUT, view) :]


class _Database:
    """The writer's connection, opened at the first batch and again after a failed opening:
    a database that cannot be opened fails each batch (which the server reports and retries),
    rather than the writer."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    def cursor(self) -> sqlite3.Cursor:
        if self.conn is None:
            conn = sqlite3.connect(self.path)
            try:
                sqlite_rows.configure(conn)
            except BaseException:
                conn.close()
                raise
            self.conn = conn
        return self.conn.cursor()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _write(db: _Database, kind: int, rows: Sequence[Any]) -> tuple[int, Any]:
    try:
        cur = db.cursor()
        with sqlite_rows._transaction(cur, write=True):
            return KINDS[kind](cur, rows), None
    except Exception as err:  # every error goes back to the server, which decides
        return 0, (type(err).__name__, str(err), getattr(err, "sqlite_errorcode", 0))


def run(path: str) -> None:
    # Stopping is the closing of stdin: a signal to the server's process group must not cut
    # the writer off before it has written what it was sent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    db = _Database(path)
    server_gone = False
    try:
        while True:
            header = _read_exact(HEADER.size)
            if header is None:
                break
            payload = _read_exact(HEADER.unpack(header)[0])
            if payload is None:
                break
            seq, kind, rows = marshal.loads(payload)
            stored, error = _write(db, kind, rows)
            if server_gone:
                continue
            try:
                _send(frame((seq, stored, error)))
            except BrokenPipeError:
                # The server died: what it had sent is still written, nobody is told.
                server_gone = True
    finally:
        db.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m chatserver.storage.writer DATABASE", file=sys.stderr)
        return 2
    run(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
