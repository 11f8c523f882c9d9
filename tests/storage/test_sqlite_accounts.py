"""IAccountStore on SQLite: exact round trips, case-insensitive names, credential replacement."""

from __future__ import annotations

from chatserver.core.errors import AccountError
from chatserver.core.names import casefold
from chatserver.core.records import Credential
from tests.storage.helpers import StoreTestCase, account, scram


class AccountTests(StoreTestCase):
    async def test_create_then_get_round_trips_exactly(self) -> None:
        store = await self.open_store()
        alice = account("Alice")
        await store.create_account(alice)
        loaded = await store.get_account("Alice")
        self.assertEqual(loaded, alice)
        assert loaded is not None
        for cred in loaded.credentials:
            for value in (cred.salt, cred.stored_key, cred.server_key):
                self.assertIs(type(value), bytes)
        self.assertEqual(
            [c.mechanism for c in loaded.credentials], ["SCRAM-SHA-256", "SCRAM-SHA-1"]
        )

    async def test_odd_values_round_trip(self) -> None:
        store = await self.open_store()
        empty = Credential(
            "SCRAM-SHA-1", salt=b"", stored_key=b"\x00", server_key=b"", iterations=1
        )
        odd = account("[Zed]^", credentials=(empty,), email=None, created_at=0.1 + 0.2)
        await store.create_account(odd)
        self.assertEqual(await store.get_account("[zed]^"), odd)
        bare = account("nobody", credentials=())
        await store.create_account(bare)
        self.assertEqual(await store.get_account("Nobody"), bare)

    async def test_lookup_ignores_case(self) -> None:
        store = await self.open_store()
        await store.create_account(account("Alice"))
        for spelling in ("alice", "ALICE", "aLiCe"):
            loaded = await store.get_account(spelling)
            assert loaded is not None
            self.assertEqual(loaded.name, "Alice")  # the registered spelling is kept
        self.assertIsNone(await store.get_account("alicia"))

    async def test_registered_keys_says_which_names_are_accounts_in_many_queries(self) -> None:
        store = await self.open_store()
        for name in ("Alice", "bob"):
            await store.create_account(account(name))
        asked = ["ALICE", "carol", "Bob"] + [f"guest{i}" for i in range(1200)]
        self.assertEqual(await store.registered_keys(asked), {"alice", "bob"})
        self.assertEqual(await store.registered_keys([]), set())

    async def test_account_keys_lists_every_folded_name(self) -> None:
        store = await self.open_store()
        self.assertEqual(await store.account_keys(), [])
        for name in ("Alice", "bob", "[Zed]^"):
            await store.create_account(account(name))
        self.assertEqual(sorted(await store.account_keys()), ["[zed]^", "alice", "bob"])

    async def test_creating_a_taken_name_in_any_case_fails_with_exists(self) -> None:
        store = await self.open_store()
        await store.create_account(account("Alice"))
        with self.assertRaises(AccountError) as caught:
            await store.create_account(account("ALICE", email="other@example.org"))
        self.assertEqual(caught.exception.code, AccountError.EXISTS)
        self.assertEqual(await store.get_account("alice"), account("Alice"))
        self.assertEqual(len(await store.list_accounts()), 1)

    async def test_update_credentials_replaces_them_all(self) -> None:
        store = await self.open_store()
        await store.create_account(account("Alice"))
        new = (scram("SCRAM-SHA-1", 9, iterations=10000),)
        self.assertTrue(await store.update_credentials("ALICE", new))
        self.assertEqual(await store.get_account("alice"), account("Alice", credentials=new))
        self.assertTrue(await store.update_credentials("alice", ()))
        loaded = await store.get_account("alice")
        assert loaded is not None
        self.assertEqual(loaded.credentials, ())

    async def test_update_credentials_of_a_missing_account(self) -> None:
        store = await self.open_store()
        self.assertFalse(await store.update_credentials("nobody", (scram(),)))
        self.assertIsNone(await store.get_account("nobody"))

    async def test_update_credentials_is_one_transaction(self) -> None:
        store = await self.open_store()
        await store.create_account(account("Alice"))
        # Two credentials for one mechanism violate the key after the old ones were deleted:
        # the delete must be rolled back with the failed insert.
        clash = (scram("SCRAM-SHA-256", 5), scram("SCRAM-SHA-256", 6))
        with self.assertRaises(self.IntegrityError):
            await store.update_credentials("alice", clash)
        self.assertEqual(await store.get_account("alice"), account("Alice"))

    async def test_delete_cascades_to_credentials(self) -> None:
        store = await self.open_store()
        await store.create_account(account("Alice"))
        await store.create_account(account("Bob"))
        self.assertTrue(await store.delete_account("ALICE"))
        self.assertFalse(await store.delete_account("alice"))
        self.assertIsNone(await store.get_account("alice"))
        rows = self.raw().execute("SELECT account, COUNT(*) FROM credentials GROUP BY account")
        self.assertEqual(rows.fetchall(), [("bob", 2)])
        # The name is free again.
        await store.create_account(account("alice"))

    async def test_list_accounts_sorted_by_folded_name(self) -> None:
        store = await self.open_store()
        names = ["bob", "Zed", "alice", "[x]", "Carol", "_under", "dave|away"]
        for name in names:
            await store.create_account(account(name))
        listed = await store.list_accounts()
        self.assertEqual([a.name for a in listed], sorted(names, key=casefold))
        self.assertEqual(listed, [account(name) for name in sorted(names, key=casefold)])

    async def test_list_accounts_when_empty(self) -> None:
        store = await self.open_store()
        self.assertEqual(await store.list_accounts(), [])
