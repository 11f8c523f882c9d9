"""The storage suite on PostgreSQL: every backend-neutral test class of the SQLite suite, run
again on a private PostgreSQL (one new database per test), and what is PostgreSQL's own: the
schema version table, migrations racing between processes, an unreachable server.

Skipped, with the reason, only when PostgreSQL is not installed.
"""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import psycopg
from hypothesis import strategies as st
from twisted.internet import defer, threads
from zope.interface.verify import verifyClass

import chatserver
import tests.storage.test_sqlite_accounts as accounts_tests
import tests.storage.test_sqlite_archive as archive_tests
import tests.storage.test_sqlite_history as history_tests
import tests.storage.test_sqlite_invites as invites_tests
import tests.storage.test_sqlite_ops as ops_tests
import tests.storage.test_sqlite_personal as personal_tests
import tests.storage.test_sqlite_rooms as rooms_tests
from chatserver.core.accounts import RegistrationInvite
from chatserver.core.bans import ServerBan
from chatserver.core.errors import AccountError, StorageUnavailable
from chatserver.core.events import StoredNative, Who
from chatserver.core.interfaces import (
    IAccountStore,
    IBlockStore,
    IHistoryStore,
    IRoomStore,
    IServerBanStore,
)
from chatserver.core.records import ArchiveEntry, ArchiveQuery, PepItem, PepNode, RosterItem
from chatserver.storage.migrations import MIGRATIONS as SQLITE_MIGRATIONS
from chatserver.storage.postgresql import PostgresStore, describe_dsn
from chatserver.storage.postgresql_migrations import MIGRATIONS, TABLES
from chatserver.storage.sqlite import SchemaTooNew, SqliteStore, StoreUnusable
from protocols.xmpp.pep_store import IPepStore
from protocols.xmpp.roster_store import IRosterStore
from tests.storage.helpers import StoreTestCase, account, ids, message
from tests.support.server import free_port

REPO_ROOT = str(Path(chatserver.__file__).resolve().parents[1])


def _no_nul(**kwargs: int) -> st.SearchStrategy[str]:
    # Every protocol refuses NUL at its edge (chatserver.core.names.text_problem), and
    # PostgreSQL text cannot hold it: the store replaces it (see test_nul_is_replaced).
    # Like st.text's own alphabet, only what UTF-8 can encode: no lone surrogates (which both
    # stores replace, see test_unstorable_text_is_replaced_not_fatal).
    return st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), **kwargs)


class PostgresAccountTests(accounts_tests.AccountTests):
    backend = "postgresql"
    IntegrityError = psycopg.IntegrityError


class PostgresHistoryTests(history_tests.HistoryTests):
    backend = "postgresql"
    text = staticmethod(_no_nul)
    odd_text = "ünïcode, \x01ACTION\x01, emoji 🎉"

    async def test_nul_is_replaced_not_fatal(self) -> None:
        store = await self.open_store()
        bad = message("bad", 1.0, text="a\x00b", tags=(("k", "\x00"),))
        good = message("good", 2.0)
        self.assertEqual(await store.append([bad, good]), 2)
        loaded_bad, loaded_good = await store.latest("lobby", 10)
        self.assertEqual(loaded_bad.text, "a\ufffdb")
        self.assertEqual(loaded_good, good)

    async def test_one_batch_of_hard_values_round_trips_in_order(self) -> None:
        # A batch is one JSON parameter: values JSON escapes or has no number for (quotes,
        # backslashes, control characters, a non-finite timestamp), words that look like
        # them, ids already stored and ids twice in the batch; rows keep the batch's order.
        store = await self.open_store()
        stored = message("m0", 0.0, text="already here")
        self.assertEqual(await store.append([stored]), 1)
        hard = [
            message("m1", 1_700_000_000.1234567, text='"q" \\ \n\t\x1f \\u0000 NaN Infinity'),
            message("m2", 2.0, text="ünïcode 🎉", tags=(("k", '["x"]'), ("n", "\x00"))),
            message("m0", 3.0, text="a second m0"),
            message("m3", math.inf, account=None, nick="NaN"),
            message("m2", 5.0, text="a second m2"),
            message("m4", 1e-7, kind="notice", text="[]"),
        ]
        self.assertEqual(await store.append(hard), 4)
        loaded = {m.id: m for m in await store.latest("lobby", 10)}
        self.assertEqual(loaded["m0"], stored)
        self.assertEqual(loaded["m1"], hard[0])
        # Tags are stored as JSON, whose escape keeps even a NUL.
        self.assertEqual(loaded["m2"], hard[1])
        self.assertEqual(loaded["m3"], hard[3])
        self.assertEqual(loaded["m4"], hard[5])
        rows = self.raw().execute("SELECT id FROM history ORDER BY seq").fetchall()
        self.assertEqual([row[0] for row in rows], ["m0", "m1", "m2", "m3", "m4"])
        # The word alone, with no non-finite number or NUL, is stored as it is.
        self.assertEqual(await store.append([message("m5", 6.0, text="NaN")]), 1)
        self.assertEqual((await store.find("m5")).text, "NaN")
        # And a non-finite timestamp alone in its batch.
        self.assertEqual(await store.append([message("m6", -math.inf)]), 1)
        self.assertEqual((await store.find("m6")).ts, -math.inf)
        self.assertEqual(await store.append([message("m7", math.nan)]), 1)
        self.assertTrue(math.isnan((await store.find("m7")).ts))

    async def test_a_batch_of_several_statements_counts_and_keeps_order(self) -> None:
        # More rows than one statement carries, some already stored in each statement's part.
        store = await self.open_store()
        batch = [message(f"m{i:05d}", float(i)) for i in range(11_000)]
        self.assertEqual(await store.append(batch[::2]), 5500)
        self.assertEqual(await store.append(batch), 5500)
        self.assertEqual(await store.latest("lobby", 20_000), batch)
        rows = self.raw().execute("SELECT id FROM history ORDER BY seq").fetchall()
        self.assertEqual([row[0] for row in rows], ids(batch[::2] + batch[1::2]))


class PostgresArchiveTests(archive_tests.ArchiveTests):
    backend = "postgresql"

    async def test_one_batch_keeps_the_first_of_each_id_per_owner_and_every_field(self) -> None:
        store = await self.open_store()
        stanza = "<message to='bob@example.org'><body>ü 🎉 &amp;</body><x xmlns='urn:x'/></message>"
        first = archive_tests.pm(1)
        native = replace(archive_tests.pm(2), native=StoredNative(stanza.encode()))
        nul = replace(archive_tests.pm(3), text="a\x00b", source=Who("ñ", "i", "h", None, ""))
        self.assertEqual(await store.append_private([ArchiveEntry("alice", "bob", first)]), 1)
        batch = [
            ArchiveEntry("alice", "bob", replace(first, text="a second m0001")),
            ArchiveEntry("bob", "alice", first),
            ArchiveEntry("alice", "bob", native, offline=True),
            ArchiveEntry("alice", "bob", replace(native, text="a second m0002")),
            ArchiveEntry("alice", "bob", nul),
        ]
        self.assertEqual(await store.append_private(batch), 3)
        page = await store.query_private(ArchiveQuery("alice", None, 10))
        self.assertEqual(page, [first, native, replace(nul, text="a\ufffdb")])
        self.assertEqual(page[0].tags, first.tags)
        self.assertIsNone(page[0].native)
        self.assertEqual(page[1].native, StoredNative(stanza.encode()))
        self.assertEqual([m.id for m in await store.take_offline("alice", 10)], ["m0002"])
        self.assertEqual(await store.query_private(ArchiveQuery("bob", None, 10)), [first])


class PostgresInviteTests(invites_tests.InviteTests):
    backend = "postgresql"


class PostgresInvitedAccountTests(invites_tests.InvitedAccountTests):
    backend = "postgresql"
    IntegrityError = psycopg.IntegrityError


class PostgresServerBanTests(ops_tests.ServerBanTests):
    backend = "postgresql"


class PostgresTimingTests(ops_tests.TimingTests):
    backend = "postgresql"


class PostgresPepStoreTests(personal_tests.PepStoreTests):
    backend = "postgresql"


class PostgresBlockStoreTests(personal_tests.BlockStoreTests):
    backend = "postgresql"


class PostgresRoomTests(rooms_tests.RoomTests):
    backend = "postgresql"


class PostgresAccountSettingsTests(archive_tests.AccountSettingsTests):
    backend = "postgresql"


class PostgresLifecycleTests(StoreTestCase):
    backend = "postgresql"

    def test_both_backends_have_the_same_steps(self) -> None:
        self.assertEqual(len(MIGRATIONS), len(SQLITE_MIGRATIONS))

    async def test_a_new_database_gets_every_table_and_the_version(self) -> None:
        store = await self.open_store()
        self.assertEqual(await store.schema_version(), len(MIGRATIONS))
        rows = self.raw().execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        tables = {name for (name,) in rows.fetchall()}
        self.assertEqual(tables, {name for name, _seq in TABLES} | {"schema_version"})
        versions = self.raw().execute("SELECT version FROM schema_version").fetchall()
        self.assertEqual(versions, [(len(MIGRATIONS),)])

    async def test_an_old_database_is_migrated_and_keeps_its_data(self) -> None:
        old = await self.open_store(migrations=MIGRATIONS[:1])
        await old.create_account(account("Alice"))
        self.assertEqual(await old.schema_version(), 1)
        await old.close()
        new = await self.open_store()
        self.assertEqual(await new.schema_version(), len(MIGRATIONS))
        self.assertEqual(await new.get_account("alice"), account("Alice"))
        # Reopening a current database changes nothing.
        again = await self.open_store()
        self.assertEqual(await again.schema_version(), len(MIGRATIONS))

    async def test_processes_opening_a_new_database_together_migrate_it_once(self) -> None:
        dsn = self.dsn()
        stores = [PostgresStore(dsn) for _ in range(4)]
        for store in stores:
            self.addCleanup(store.close)
        await defer.gatherResults([store.open(check=True) for store in stores])
        versions = self.raw().execute("SELECT version FROM schema_version").fetchall()
        self.assertEqual(versions, [(len(MIGRATIONS),)])

    async def test_a_failing_step_leaves_the_previous_version(self) -> None:
        broken = ("CREATE TABLE half (x INTEGER)", "THIS IS NOT SQL")
        store = PostgresStore(self.dsn(), migrations=(*MIGRATIONS, broken))
        self.addCleanup(store.close)
        with self.assertRaises(psycopg.errors.SyntaxError):
            await store.open()
        tables = self.raw().execute(
            "SELECT 1 FROM information_schema.tables WHERE table_name = 'half'"
        )
        self.assertEqual(tables.fetchall(), [])
        versions = self.raw().execute("SELECT version FROM schema_version").fetchall()
        self.assertEqual(versions, [(len(MIGRATIONS),)])

    async def test_a_newer_schema_is_refused(self) -> None:
        await self.open_store(migrations=(*MIGRATIONS, ("CREATE TABLE later (x INTEGER)",)))
        store = PostgresStore(self.dsn())
        self.addCleanup(store.close)
        with self.assertRaises(SchemaTooNew):
            await store.open(check=True)

    async def test_an_unreachable_server_makes_the_store_unusable_at_start(self) -> None:
        dsn = f"postgresql://chat:secret@127.0.0.1:{free_port()}/nowhere"
        store = PostgresStore(dsn)
        self.addCleanup(store.close)
        with self.assertRaises(StoreUnusable) as caught:
            await store.open(check=True)
        self.assertIn(f"127.0.0.1:{dsn.split(':')[3].split('/')[0]}/nowhere", str(caught.exception))
        self.assertNotIn("secret", str(caught.exception))

    async def test_a_read_only_database_is_unusable_at_start_and_failing_writes_are_reported(
        self,
    ) -> None:
        store = await self.open_store()
        await store.close()
        database = self.dsn().rsplit("/", 1)[1]
        self.raw().execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
        ro = PostgresStore(self.dsn())
        self.addCleanup(ro.close)
        with self.assertRaises(StoreUnusable) as caught:
            await ro.open(check=True)
        self.assertIn("cannot be used", str(caught.exception))
        with self.assertRaises(StorageUnavailable) as failed:
            await ro.probe_write()
        self.assertIsInstance(failed.exception.error, psycopg.Error)
        self.assertIsNotNone(ro.write_failure)
        # Reads still work, and a write that succeeds clears the failure.
        self.assertIsNone(await ro.get_account("alice"))
        self.raw("admin").execute(
            f'ALTER DATABASE "{database}" SET default_transaction_read_only = off'
        )
        rw = await self.open_store()
        await rw.probe_write()
        self.assertIsNone(rw.write_failure)

    async def test_the_store_reconnects_after_the_server_restarts(self) -> None:
        store = await self.open_store()
        await store.create_account(account("Alice"))
        database = self.dsn().rsplit("/", 1)[1]
        # Ends the store's connection as a server restart would.
        self.raw("admin").execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        )
        # The first operation may see the dropped connection; the next ones work again.
        try:
            await store.get_account("alice")
        except StorageUnavailable:
            pass
        # adbapi logs the failed rollback of the dropped connection.
        self.flushLoggedErrors()
        self.assertEqual(await store.get_account("alice"), account("Alice"))
        await store.create_account(account("Bob"))
        with self.assertRaises(AccountError):
            await store.create_account(account("BOB"))

    def test_describe_dsn_hides_the_password(self) -> None:
        self.assertEqual(
            describe_dsn("postgresql://chat:secret@db.example.org:6543/community"),
            "postgresql://chat@db.example.org:6543/community",
        )
        self.assertEqual(describe_dsn("postgresql:///x"), "postgresql://localhost:5432/x")


def _chatserver(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, in a child process (it runs its own reactor)."""
    return subprocess.run(
        [sys.executable, "-m", "chatserver", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )


class StorageCopyTests(StoreTestCase):
    backend = "postgresql"

    async def _community(self) -> SqliteStore:
        """An SQLite database holding some of everything."""
        src = SqliteStore(self.db_path())
        self.addCleanup(src.close)
        await src.open()
        for name in ("Alice", "bob", "[Zed]^"):
            await src.create_account(account(name))
        await src.save_room(rooms_tests.FULL)
        await src.append([message(f"m{i}", 1000.0 + i, text=f"line {i}") for i in range(300)])
        await src.append([message("pm", 2000.0, room=None, target="bob")])
        await src.save_server_ban(ServerBan("*!*@203.0.113.0/24", "spam", "admin", 5.0))
        await src.save_invite(RegistrationInvite("carol", "admin", 10.0, 4e9))
        await src.set_item("alice", RosterItem(jid="bob@localhost", groups=("Friends",)))
        await src.add_blocks("alice", ["mallory"])
        await src.save_pep_node(
            "alice", PepNode(node="urn:x", kind="pep", items=(PepItem("1", "<x/>", 3.0),))
        )
        return src

    async def test_copy_moves_everything_verified_by_counts(self) -> None:
        src = await self._community()
        dsn = self.dsn()
        done = await threads.deferToThread(
            _chatserver, "storage", "copy", "--from", self.db_path(), "--to", dsn
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("history", done.stdout)
        self.assertRegex(done.stdout, r"history\s+301")
        self.assertRegex(done.stdout, r"accounts\s+3")
        self.assertIn("every table holds as many rows", done.stdout)

        dst = await self.open_store()
        self.assertEqual(await dst.list_accounts(), await src.list_accounts())
        self.assertEqual(await dst.load_rooms(), await src.load_rooms())
        self.assertEqual(await dst.latest("lobby", 500), await src.latest("lobby", 500))
        self.assertEqual(await dst.latest("bob", 5), await src.latest("bob", 5))
        self.assertEqual(await dst.load_server_bans(), await src.load_server_bans())
        self.assertEqual(await dst.list_invites(0.0), await src.list_invites(0.0))
        self.assertEqual(await dst.get_roster("alice"), await src.get_roster("alice"))
        self.assertEqual(await dst.get_pep("alice"), await src.get_pep("alice"))
        self.assertEqual(await dst.load_blocks(), [("alice", "mallory")])
        # New rows are numbered after the copied ones.
        self.assertEqual(await dst.append([message("after", 3000.0)]), 1)
        self.assertEqual((await dst.latest("lobby", 1))[0].id, "after")

    async def test_a_non_empty_target_is_refused_unless_forced(self) -> None:
        await self._community()
        dst = await self.open_store()
        await dst.create_account(account("Mallory"))
        args = ("storage", "copy", "--from", self.db_path(), "--to", self.dsn())
        refused = await threads.deferToThread(_chatserver, *args)
        self.assertEqual(refused.returncode, 1)
        self.assertIn("not empty (accounts 1, credentials 2)", refused.stderr)
        self.assertIsNotNone(await dst.get_account("mallory"))
        forced = await threads.deferToThread(_chatserver, *args, "--force")
        self.assertEqual(forced.returncode, 0, forced.stderr)
        self.assertIsNone(await dst.get_account("mallory"))
        self.assertEqual(len(await dst.list_accounts()), 3)

    async def test_a_missing_file_or_unreachable_target_is_an_error(self) -> None:
        missing = await threads.deferToThread(
            _chatserver, "storage", "copy", "--from", self.db_path("nope.db"), "--to", self.dsn()
        )
        self.assertEqual(missing.returncode, 1)
        self.assertIn("no such file", missing.stderr)
        await self._community()
        dsn = f"postgresql://chat:secret@127.0.0.1:{free_port()}/x"
        unreachable = await threads.deferToThread(
            _chatserver, "storage", "copy", "--from", self.db_path(), "--to", dsn
        )
        self.assertEqual(unreachable.returncode, 1)
        self.assertIn("cannot be used", unreachable.stderr)
        self.assertNotIn("secret", unreachable.stderr)


# What only an SQLite file has: PostgreSQL has pg_dump and its own checks.
SQLITE_ONLY = {"backup", "integrity_check"}


def test_both_backends_offer_the_same_operations() -> None:
    def public(cls: type) -> set[str]:
        # Inherited ones too: SqliteStore overrides some of the facade's for its writer.
        return {
            name
            for klass in cls.__mro__
            if klass is not object
            for name in vars(klass)
            if not name.startswith("_")
        }

    missing = public(SqliteStore) - SQLITE_ONLY - public(PostgresStore)
    assert not missing, f"PostgresStore lacks {sorted(missing)}"
    for interface in (IAccountStore, IRoomStore, IHistoryStore, IServerBanStore, IBlockStore):
        verifyClass(interface, PostgresStore)
    # Given to the XMPP factory as these, like SqliteStore (which does not declare them either).
    verifyClass(IRosterStore, PostgresStore, tentative=True)
    verifyClass(IPepStore, PostgresStore, tentative=True)
