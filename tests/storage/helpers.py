"""Shared pieces of the storage tests: a trial base class with a temp dir, and record factories.

The tests are ``twisted.trial.unittest.TestCase``s so that trial spins the reactor for the
Deferreds (and coroutines) they return; pytest runs them like any unittest class.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from twisted.trial import unittest

from chatserver.core.events import Message, Who
from chatserver.core.records import AccountRecord, Credential
from chatserver.storage.migrations import MIGRATIONS, Step
from chatserver.storage.sqlite import SqliteStore


class StoreTestCase(unittest.TestCase):
    """Runs on SQLite; a subclass with ``backend = "postgresql"`` runs the same tests on a
    private PostgreSQL (the ``postgres`` fixture), each test on a new database."""

    tmp_path: Path
    backend = "sqlite"
    # SQLite: history appends written by the writer process (the server's way), not the thread.
    writer = False
    # What the backend raises when a statement breaks a constraint.
    IntegrityError: type[Exception] = sqlite3.IntegrityError

    @pytest.fixture(autouse=True)
    def _use_tmp_path(self, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        # trial's own mktemp() would write under the current directory (the source tree).
        self.tmp_path = tmp_path
        self._databases: dict[str, str] = {}
        if self.backend == "postgresql":
            self.postgres = request.getfixturevalue("postgres")

    def dsn(self, name: str = "chat.db") -> str:
        """The PostgreSQL database standing for the file ``name`` in this test."""
        if name not in self._databases:
            self._databases[name] = self.postgres.new_database()
        return self._databases[name]

    def db_path(self, name: str = "chat.db") -> str:
        return str(self.tmp_path / name)

    async def open_store(
        self, name: str = "chat.db", *, migrations: Sequence[Step] | None = None
    ) -> Any:
        store: Any
        if self.backend == "postgresql":
            from chatserver.storage.postgresql import PostgresStore
            from chatserver.storage.postgresql_migrations import MIGRATIONS as PG_MIGRATIONS

            pg_steps: Any = PG_MIGRATIONS if migrations is None else migrations
            store = PostgresStore(self.dsn(name), migrations=pg_steps)
        else:
            store = SqliteStore(
                self.db_path(name),
                migrations=MIGRATIONS if migrations is None else migrations,
                writer=self.writer,
            )
        self.addCleanup(store.close)
        await store.open()
        return store

    def raw(self, name: str = "chat.db") -> Any:
        """A plain connection to the same database, to look under the store (both backends'
        connections have ``execute(sql).fetchall()``)."""
        conn: Any
        if self.backend == "postgresql":
            import psycopg

            conn = psycopg.connect(self.dsn(name), autocommit=True)
        else:
            conn = sqlite3.connect(self.db_path(name), timeout=5)
        self.addCleanup(conn.close)
        return conn


def scram(mechanism: str = "SCRAM-SHA-256", seed: int = 1, iterations: int = 4096) -> Credential:
    # Bytes with NULs, high bytes and no valid UTF-8, to prove they never pass through text.
    return Credential(
        mechanism=mechanism,
        salt=bytes([seed, 0, 255, 128]) * 4,
        stored_key=bytes(range(seed, seed + 32)),
        server_key=b"\x00" + bytes([seed]) * 31,
        iterations=iterations,
    )


def account(name: str = "Alice", **kwargs: Any) -> AccountRecord:
    fields: dict[str, Any] = {
        "credentials": (scram("SCRAM-SHA-256", 1), scram("SCRAM-SHA-1", 2)),
        "created_at": 1_700_000_000.25,
        "email": f"{name.lower()}@example.org",
    }
    fields.update(kwargs)
    return AccountRecord(name=name, **fields)


def message(
    msgid: str,
    ts: float,
    room: str = "lobby",
    text: str = "hello",
    *,
    nick: str = "alice",
    account: str | None = "Alice",
    **kwargs: Any,
) -> Message:
    return Message(
        ts=ts,
        id=msgid,
        source=Who(nick, "~a", "user/alice", account, "Alice Liddell"),
        text=text,
        room=room,
        **kwargs,
    )


def ids(messages: Sequence[Message]) -> list[str]:
    return [m.id for m in messages]
