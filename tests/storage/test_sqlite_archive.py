"""Private archives on SQLite: one row per owning account, paging by (ts, id), offline marks,
expiry in batches, read markers, and deleting an account deleting its archive."""

from __future__ import annotations

from chatserver.core.events import Message, Who
from chatserver.core.records import AlwaysOnRecord, ArchiveEntry, ArchivePrefs, ArchiveQuery
from tests.storage.helpers import StoreTestCase, account

NOW = 1_700_000_000.0


def pm(n: int, sender: str = "alice", target: str = "bob", ts: float | None = None) -> Message:
    return Message(
        ts=NOW + n if ts is None else ts,
        id=f"m{n:04d}",
        source=Who(sender, sender, "h.cloak", sender),
        text=f"hello {n}",
        target=target,
        tags=(("+draft/reply", "x"),) if n == 1 else (),
    )


class ArchiveTests(StoreTestCase):
    async def test_both_ends_keep_the_same_id_and_pages_do_not_overlap(self) -> None:
        store = await self.open_store()
        entries = []
        for n in range(10):
            msg = pm(n)
            entries += [ArchiveEntry("alice", "bob", msg), ArchiveEntry("bob", "alice", msg)]
        entries.append(ArchiveEntry("alice", "carol", pm(10, target="carol")))
        self.assertEqual(await store.append_private(entries), 21)
        # The same batch again stores nothing twice.
        self.assertEqual(await store.append_private(entries), 0)
        latest = await store.query_private(ArchiveQuery("alice", "bob", 4))
        self.assertEqual([m.id for m in latest], ["m0006", "m0007", "m0008", "m0009"])
        self.assertEqual(latest[0].target, "bob")
        older = await store.query_private(
            ArchiveQuery("alice", "bob", 4, before=(latest[0].ts, latest[0].id))
        )
        self.assertEqual([m.id for m in older], ["m0002", "m0003", "m0004", "m0005"])
        first = await store.query_private(ArchiveQuery("bob", None, 3, newest=False))
        self.assertEqual([m.id for m in first], ["m0000", "m0001", "m0002"])
        self.assertEqual(first[1].tags, (("+draft/reply", "x"),))
        everything = await store.query_private(ArchiveQuery("alice", None, 100))
        self.assertEqual(len(everything), 11)
        self.assertEqual(
            await store.private_targets("alice", 0, NOW + 100, 10),
            [("bob", NOW + 9), ("carol", NOW + 10)],
        )
        self.assertEqual((await store.find_private("bob", "m0003")).text, "hello 3")
        self.assertIsNone(await store.find_private("bob", "m0010"))

    async def test_offline_messages_are_taken_once(self) -> None:
        store = await self.open_store()
        await store.append_private(
            [ArchiveEntry("bob", "alice", pm(n), offline=True) for n in range(3)]
            + [ArchiveEntry("alice", "bob", pm(n)) for n in range(3)]
        )
        taken = await store.take_offline("bob", 10)
        self.assertEqual([m.id for m in taken], ["m0000", "m0001", "m0002"])
        self.assertEqual(await store.take_offline("bob", 10), [])
        self.assertEqual(await store.take_offline("alice", 10), [])
        # Delivered messages stay in the archive.
        self.assertEqual(len(await store.query_private(ArchiveQuery("bob", None, 10))), 3)

    async def test_expiry_removes_old_messages_only_in_batches(self) -> None:
        store = await self.open_store()
        await store.append([pm(n, target="x") for n in range(5)])  # room "x" history
        await store.append_private([ArchiveEntry("alice", "bob", pm(n)) for n in range(10)])
        self.assertEqual(await store.expire("private_history", NOW + 7, 4), 4)
        self.assertEqual(await store.expire("private_history", NOW + 7, 4), 3)
        self.assertEqual(await store.expire("private_history", NOW + 7, 4), 0)
        left = await store.query_private(ArchiveQuery("alice", None, 100))
        self.assertEqual([m.id for m in left], ["m0007", "m0008", "m0009"])
        self.assertEqual(await store.expire("history", NOW + 2, 100), 2)
        self.assertEqual([m.id for m in await store.latest("x", 10)], ["m0002", "m0003", "m0004"])

    async def test_deleting_an_account_deletes_its_archive_and_markers_only(self) -> None:
        store = await self.open_store()
        await store.create_account(account("Bob"))
        msg = pm(1)
        await store.append_private(
            [ArchiveEntry("alice", "bob", msg), ArchiveEntry("bob", "alice", msg)]
        )
        self.assertEqual(await store.set_read_marker("bob", "alice", NOW + 5), NOW + 5)
        # A marker never moves back.
        self.assertEqual(await store.set_read_marker("bob", "alice", NOW + 1), NOW + 5)
        self.assertTrue(await store.delete_account("bob"))
        self.assertEqual(await store.query_private(ArchiveQuery("bob", None, 10)), [])
        self.assertIsNone(await store.get_read_marker("bob", "alice"))
        self.assertEqual(len(await store.query_private(ArchiveQuery("alice", None, 10))), 1)


class AccountSettingsTests(StoreTestCase):
    """Always-on membership and archive preferences: what a restart reads back, and what goes
    with the account."""

    async def test_always_on_round_trips_and_goes_with_the_account(self) -> None:
        store = await self.open_store()
        await store.create_account(account("Alice"))
        await store.create_account(account("Bob"))
        self.assertEqual(await store.load_always_on(), [])
        await store.save_always_on(
            AlwaysOnRecord("alice", "Alice", "alice", "h.cloak", "Alice A", ("dev", "tea"), None)
        )
        await store.save_always_on(AlwaysOnRecord("bob", "bobby", "b", "c.cloak", "B", ()))
        # Saved again: replaced, not added.
        await store.save_always_on(
            AlwaysOnRecord("alice", "Alicia", "alice", "h.cloak", "Alice A", ("dev",), NOW)
        )
        loaded = await store.load_always_on()
        self.assertEqual(
            loaded,
            [
                AlwaysOnRecord(
                    "alice", "Alicia", "alice", "h.cloak", "Alice A", ("dev",), NOW, "Alice"
                ),
                AlwaysOnRecord("bob", "bobby", "b", "c.cloak", "B", (), None, "Bob"),
            ],
        )
        await store.delete_always_on("Bob")
        self.assertEqual([r.account for r in await store.load_always_on()], ["alice"])
        await store.delete_account("alice")
        self.assertEqual(await store.load_always_on(), [])

    async def test_archive_preferences_round_trip_and_go_with_the_account(self) -> None:
        store = await self.open_store()
        await store.create_account(account("Alice"))
        prefs = ArchivePrefs("never", ("bob", "~guest1"), ("=x@example.org",))
        await store.save_archive_prefs("Alice", prefs)
        self.assertEqual(await store.load_archive_prefs(), [("alice", prefs)])
        await store.save_archive_prefs("alice", ArchivePrefs())
        self.assertEqual(await store.load_archive_prefs(), [("alice", ArchivePrefs())])
        await store.delete_account("alice")
        self.assertEqual(await store.load_archive_prefs(), [])

    async def test_delivered_messages_may_be_marked_undelivered_again(self) -> None:
        store = await self.open_store()
        await store.append_private([ArchiveEntry("bob", "alice", pm(n)) for n in range(3)])
        self.assertEqual(await store.take_offline("bob", 10), [])
        await store.mark_offline("bob", ["m0001", "m0002", "nope"])
        # Another account's copy of the same id is not its own.
        await store.mark_offline("alice", ["m0000"])
        self.assertEqual([m.id for m in await store.take_offline("bob", 10)], ["m0001", "m0002"])
        self.assertEqual(await store.take_offline("alice", 10), [])


class ArchiveWriterTests(ArchiveTests):
    """The same, with appends written by the writer process."""

    writer = True
