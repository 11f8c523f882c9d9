"""Registration invitations on SQLite: migration 4, round trips, expiry, and the transaction
that uses an invitation up while it creates the account."""

from __future__ import annotations

from twisted.internet import defer

from chatserver.core.accounts import RegistrationInvite
from chatserver.core.bans import ServerBan
from chatserver.core.errors import AccountError
from chatserver.storage.migrations import MIGRATIONS, SCHEMA_VERSION
from tests.storage.helpers import StoreTestCase, account

NOW = 1_700_000_000.0
DAY = 86400.0


def invite(
    name: str, created_at: float = NOW, days: float = 7, by: str = "admin"
) -> RegistrationInvite:
    return RegistrationInvite(name, by, created_at, created_at + days * DAY)


class MigrationTests(StoreTestCase):
    async def test_a_version_3_database_upgrades_and_keeps_its_data(self) -> None:
        old = await self.open_store(migrations=MIGRATIONS[:3])
        self.assertEqual(await old.schema_version(), 3)
        await old.create_account(account("Alice"))
        ban = ServerBan("*!*@203.0.113.0/24", "spam", "admin", NOW)
        await old.save_server_ban(ban)
        await old.close()
        tables = {row[0] for row in self.raw().execute("SELECT name FROM sqlite_master")}
        self.assertNotIn("registration_invites", tables)

        store = await self.open_store()
        # Every later step applies too.
        self.assertEqual(await store.schema_version(), SCHEMA_VERSION)
        self.assertEqual(await store.get_account("alice"), account("Alice"))
        self.assertEqual(await store.load_server_bans(), [ban])
        await store.save_invite(invite("Bob"))
        self.assertEqual(await store.list_invites(NOW), [invite("Bob")])


class InviteTests(StoreTestCase):
    async def test_round_trip_any_case_replace_and_delete(self) -> None:
        store = await self.open_store()
        await store.save_invite(invite("Bob"))
        await store.save_invite(invite("[Zed]^", by=""))
        self.assertEqual(await store.get_invite("BOB", NOW), invite("Bob"))
        self.assertEqual(await store.get_invite("[zed]^", NOW), invite("[Zed]^", by=""))
        self.assertIsNone(await store.get_invite("carol", NOW))
        renewed = invite("bob", NOW + DAY, days=2, by="root")
        await store.save_invite(renewed)
        # By folded name in code point order, as list_accounts sorts: "[" comes before "b".
        self.assertEqual(await store.list_invites(NOW), [invite("[Zed]^", by=""), renewed])
        await store.close()
        again = await self.open_store()
        self.assertEqual(await again.get_invite("bob", NOW), renewed)
        self.assertTrue(await again.delete_invite("BOB"))
        self.assertFalse(await again.delete_invite("bob"))
        self.assertEqual(await again.list_invites(NOW), [invite("[Zed]^", by="")])

    async def test_expired_invitations_are_not_found_and_are_purged(self) -> None:
        store = await self.open_store()
        await store.save_invite(invite("short", days=1))
        await store.save_invite(invite("long", days=3))
        expiry = NOW + DAY
        self.assertIsNotNone(await store.get_invite("short", expiry - 0.001))
        self.assertIsNone(await store.get_invite("short", expiry))
        count = self.raw().execute("SELECT COUNT(*) FROM registration_invites").fetchone()[0]
        self.assertEqual(count, 2)
        self.assertEqual(await store.list_invites(expiry), [invite("long", days=3)])
        rows = self.raw().execute("SELECT key FROM registration_invites").fetchall()
        self.assertEqual(rows, [("long",)])
        self.assertEqual(await store.purge_invites(NOW + 3 * DAY), 1)
        self.assertEqual(await store.list_invites(NOW), [])
        # Saving one purges those expired by its creation time.
        await store.save_invite(invite("old", days=1))
        await store.save_invite(invite("new", NOW + 2 * DAY))
        self.assertEqual(await store.list_invites(NOW), [invite("new", NOW + 2 * DAY)])


class InvitedAccountTests(StoreTestCase):
    async def test_the_invitation_is_used_up_by_the_account(self) -> None:
        store = await self.open_store()
        await store.save_invite(invite("Bob"))
        await store.create_invited_account(account("bob"), NOW + 1)
        self.assertEqual(await store.get_account("BOB"), account("bob"))
        self.assertEqual(await store.list_invites(NOW), [])
        # No invitation left: even a free name is refused.
        await store.delete_account("bob")
        with self.assertRaises(AccountError) as err:
            await store.create_invited_account(account("bob"), NOW + 2)
        self.assertEqual(err.exception.code, AccountError.CLOSED)
        self.assertIsNone(await store.get_account("bob"))

    async def test_an_expired_or_missing_invitation_creates_nothing(self) -> None:
        store = await self.open_store()
        await store.save_invite(invite("carol", days=1))
        for name, now in (("carol", NOW + DAY), ("dave", NOW)):
            with self.assertRaises(AccountError) as err:
                await store.create_invited_account(account(name), now)
            self.assertEqual(
                (err.exception.code, err.exception.reason),
                (
                    AccountError.CLOSED,
                    "registration on this server is by invitation; ask an operator",
                ),
            )
        self.assertEqual(await store.list_accounts(), [])

    async def test_a_failed_insert_gives_the_invitation_back(self) -> None:
        store = await self.open_store()
        await store.create_account(account("Erin"))
        await store.save_invite(invite("erin"))
        with self.assertRaises(AccountError) as err:
            await store.create_invited_account(account("ERIN", email=None), NOW + 1)
        self.assertEqual(err.exception.code, AccountError.EXISTS)
        self.assertEqual(await store.get_account("erin"), account("Erin"))
        self.assertEqual(await store.list_invites(NOW), [invite("erin")])

    async def test_stores_racing_for_one_invitation_create_one_account(self) -> None:
        # Each store has its own connection, as the server and `chatserver account` do: the
        # writes really race, and BEGIN IMMEDIATE must let exactly one of them through.
        stores = [await self.open_store() for _ in range(4)]
        await stores[0].save_invite(invite("frank"))
        attempts = [
            store.create_invited_account(account("frank", email=f"{i}@example.org"), NOW + 1)
            for i, store in enumerate(stores)
            for _ in range(3)
        ]
        outcomes = await defer.DeferredList(attempts, consumeErrors=True)
        won = [i for i, (ok, _value) in enumerate(outcomes) if ok]
        self.assertEqual(len(won), 1)
        for ok, value in outcomes:
            if not ok:
                value.trap(AccountError)
                self.assertEqual(value.value.code, AccountError.CLOSED)
        winner = won[0] // 3
        self.assertEqual(
            await stores[3].get_account("frank"),
            account("frank", email=f"{winner}@example.org"),
        )
        self.assertEqual(await stores[2].list_invites(NOW), [])
