"""SqliteStore as a whole: schema migrations, pragmas, reopening, sharing the file, backup."""

from __future__ import annotations

import os
import sqlite3
import sys
import textwrap
from pathlib import Path

from twisted.internet import defer, utils
from zope.interface.verify import verifyObject

import chatserver
from chatserver.core.errors import StorageUnavailable
from chatserver.core.interfaces import IAccountStore, IHistoryStore, IRoomStore
from chatserver.core.records import RoomRecord
from chatserver.storage import SchemaTooNew, SqliteStore, StoreClosed
from chatserver.storage.migrations import MIGRATIONS, SCHEMA_VERSION
from chatserver.storage.sqlite_rows import BUSY_TIMEOUT_MS
from tests.storage.helpers import StoreTestCase, account, ids, message

REPO_ROOT = str(Path(chatserver.__file__).resolve().parents[1])
ROSTER_STEP = ("CREATE TABLE roster (owner TEXT NOT NULL, contact TEXT NOT NULL)",)


class LifecycleTests(StoreTestCase):
    async def test_implements_the_three_interfaces(self) -> None:
        store = await self.open_store()
        for iface in (IAccountStore, IRoomStore, IHistoryStore):
            self.assertTrue(verifyObject(iface, store))

    async def test_open_creates_parent_directories_and_schema(self) -> None:
        store = await self.open_store("a/b/c/chat.db")
        self.assertEqual(await store.schema_version(), SCHEMA_VERSION)
        self.assertEqual(SCHEMA_VERSION, len(MIGRATIONS))
        await store.close()
        names = {
            row[0]
            for row in self.raw("a/b/c/chat.db").execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'index')"
            )
        }
        self.assertLessEqual(
            {"accounts", "credentials", "rooms", "history", "history_target_ts_id"}, names
        )
        self.assertNotIn("roster", names)

    async def test_connection_pragmas(self) -> None:
        store = await self.open_store()

        def read(cur: sqlite3.Cursor) -> tuple[object, ...]:
            return tuple(
                cur.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            )

        pragmas = await store._run(read, write=False, transaction=False)
        self.assertEqual(pragmas, ("wal", 1, 1, BUSY_TIMEOUT_MS))  # synchronous 1 is NORMAL

    async def test_open_is_idempotent(self) -> None:
        store = await self.open_store()
        await store.create_account(account("Alice"))
        await store.open()  # again, same store
        other = await self.open_store()  # and a second store on the migrated file
        self.assertEqual(await other.schema_version(), SCHEMA_VERSION)
        self.assertIsNotNone(await other.get_account("alice"))

    async def test_concurrent_first_open_migrates_once(self) -> None:
        # Server and CLI starting together on a fresh file: neither may fail or double-apply.
        first = SqliteStore(self.db_path())
        second = SqliteStore(self.db_path())
        self.addCleanup(first.close)
        self.addCleanup(second.close)
        await defer.gatherResults([first.open(), second.open()], consumeErrors=True)
        self.assertEqual(await first.schema_version(), SCHEMA_VERSION)
        self.assertEqual(await second.schema_version(), SCHEMA_VERSION)

    async def test_appended_migration_is_applied_on_next_open(self) -> None:
        store = await self.open_store()
        await store.create_account(account("Alice"))
        await store.close()
        upgraded = await self.open_store(migrations=(*MIGRATIONS, ROSTER_STEP))
        self.assertEqual(await upgraded.schema_version(), SCHEMA_VERSION + 1)
        self.assertIsNotNone(await upgraded.get_account("Alice"))
        await upgraded.close()
        tables = {r[0] for r in self.raw().execute("SELECT name FROM sqlite_master")}
        self.assertIn("roster", tables)

    async def test_failing_migration_rolls_back_its_whole_step(self) -> None:
        store = await self.open_store()
        await store.close()
        broken = (*ROSTER_STEP, "CREATE TABLE oops (")
        store = SqliteStore(self.db_path(), migrations=(*MIGRATIONS, broken))
        self.addCleanup(store.close)
        with self.assertRaises(StorageUnavailable) as caught:
            await store.open()
        self.assertIsInstance(caught.exception.error, sqlite3.OperationalError)
        self.assertEqual(await store.schema_version(), SCHEMA_VERSION)
        tables = {r[0] for r in self.raw().execute("SELECT name FROM sqlite_master")}
        self.assertNotIn("roster", tables)

    async def test_refuses_a_database_from_a_newer_version(self) -> None:
        newer = await self.open_store(migrations=(*MIGRATIONS, ROSTER_STEP))
        await newer.close()
        store = SqliteStore(self.db_path())
        self.addCleanup(store.close)
        with self.assertRaises(SchemaTooNew):
            await store.open()

    async def test_data_survives_close_and_reopen(self) -> None:
        store = await self.open_store()
        alice = account("Alice")
        room = RoomRecord(name="lobby", owner="Alice", created_at=5.0, topic="hi", ops=("Alice",))
        msgs = [message(f"m{i}", 10.0 + i) for i in range(5)]
        await store.create_account(alice)
        await store.save_room(room)
        await store.append(msgs)
        await store.close()

        store = await self.open_store()
        self.assertEqual(await store.get_account("alice"), alice)
        self.assertEqual(await store.load_rooms(), [room])
        self.assertEqual(await store.latest("lobby", 10), msgs)

    async def test_close_finishes_queued_work(self) -> None:
        store = await self.open_store()
        pending = [store.append([message(f"m{i}", float(i))]) for i in range(50)]
        closed = store.close()  # not waiting for the appends first
        self.assertEqual(await defer.gatherResults(pending), [1] * 50)
        await closed
        store = await self.open_store()
        self.assertEqual(len(await store.latest("lobby", 100)), 50)

    async def test_use_after_close_fails_at_once(self) -> None:
        store = await self.open_store()
        await store.close()
        with self.assertRaises(StoreClosed):
            await store.get_account("alice")
        await store.close()  # closing twice is harmless

    async def test_second_store_on_the_same_file_sees_writes_immediately(self) -> None:
        server = await self.open_store()
        cli = await self.open_store()  # as `chatserver account create` would, separately
        await cli.create_account(account("Bob"))
        self.assertEqual(await server.get_account("BOB"), account("Bob"))
        await server.append([message("m1", 1.0)])
        self.assertEqual(ids(await cli.latest("lobby", 5)), ["m1"])

    async def test_another_process_writes_while_the_server_holds_the_file(self) -> None:
        server = await self.open_store()
        await server.append([message("m0", 0.0)])
        script = textwrap.dedent(
            """
            import sys
            from twisted.internet import defer, task
            from chatserver.core.records import AccountRecord
            from chatserver.storage import SqliteStore

            async def main(reactor):
                store = SqliteStore(sys.argv[1], reactor=reactor)
                await store.open()
                await store.create_account(AccountRecord("Carol", (), 1.0))
                await store.close()

            task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))
            """
        )
        child = utils.getProcessOutputAndValue(
            sys.executable, ("-c", script, self.db_path()), env=dict(os.environ), path=REPO_ROOT
        )
        # The server keeps writing while the other process runs.
        for i in range(1, 30):
            await server.append([message(f"m{i}", float(i))])
        _out, err, code = await child
        self.assertEqual(code, 0, err.decode())
        self.assertEqual(
            await server.get_account("carol"),
            account("Carol", credentials=(), created_at=1.0, email=None),
        )
        self.assertEqual(len(await server.latest("lobby", 100)), 30)

    async def test_two_stores_writing_at_once_do_not_fail(self) -> None:
        # Interleaved write transactions from two connections: each must wait for the other's
        # lock (busy timeout, BEGIN IMMEDIATE), never fail with "database is locked".
        first = await self.open_store()
        second = await self.open_store()
        work = []
        for i in range(40):
            work.append(first.create_account(account(f"first{i}")))
            work.append(second.create_account(account(f"second{i}")))
            work.append(first.append([message(f"a{i}", float(i))]))
            work.append(second.update_credentials(f"first{i // 2}", ()))
        await defer.gatherResults(work, consumeErrors=True)
        self.assertEqual(len(await first.list_accounts()), 80)
        self.assertEqual(len(await second.latest("lobby", 100)), 40)

    async def test_integrity_check(self) -> None:
        store = await self.open_store()
        await store.append([message("m1", 1.0)])
        self.assertEqual(await store.integrity_check(), "ok")

    async def test_backup_is_a_complete_standalone_copy(self) -> None:
        store = await self.open_store()
        await store.create_account(account("Alice"))
        await store.save_room(RoomRecord(name="lobby", owner="Alice", created_at=1.0))
        msgs = [message(f"m{i}", float(i)) for i in range(20)]
        await store.append(msgs)
        dest = self.tmp_path / "backups" / "nightly.db"
        dest.parent.mkdir()
        dest.write_bytes(b"an older backup, to be replaced")
        await store.backup(str(self.tmp_path / "backups" / "nightly.db"))

        self.assertEqual(sorted(os.listdir(dest.parent)), ["nightly.db"])
        copy = sqlite3.connect(dest)
        self.addCleanup(copy.close)
        self.assertEqual(copy.execute("PRAGMA journal_mode").fetchone()[0], "delete")
        self.assertEqual(copy.execute("PRAGMA integrity_check").fetchone()[0], "ok")
        live = self.raw()
        for table in ("accounts", "credentials", "rooms", "history"):
            query = f"SELECT * FROM {table} ORDER BY 1, 2"
            self.assertEqual(copy.execute(query).fetchall(), live.execute(query).fetchall())

        restored = await self.open_store("backups/nightly.db")
        self.assertEqual(await restored.get_account("alice"), account("Alice"))
        self.assertEqual(await restored.latest("lobby", 100), msgs)

    async def test_backup_refuses_to_overwrite_the_live_file(self) -> None:
        store = await self.open_store()
        await store.create_account(account("Alice"))
        with self.assertRaises(ValueError):
            await store.backup(self.db_path())
        self.assertEqual(await store.integrity_check(), "ok")
        self.assertIsNotNone(await store.get_account("alice"))
