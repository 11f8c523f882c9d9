"""The store's part in operations: server bans kept across restarts, timing of operations."""

from __future__ import annotations

from chatserver.core.bans import ServerBan
from tests.storage.helpers import StoreTestCase, account


class ServerBanTests(StoreTestCase):
    async def test_bans_round_trip_and_survive_reopening(self) -> None:
        store = await self.open_store()
        first = ServerBan("*!*@203.0.113.0/24", "spam", "admin", 1_700_000_000.5)
        second = ServerBan("$a:mallory", "", "root", 1_700_000_001.0)
        await store.save_server_ban(second)
        await store.save_server_ban(first)
        self.assertEqual(await store.load_server_bans(), [first, second])
        # Saving the same mask again replaces it.
        changed = ServerBan(first.mask, "more spam", "admin", 1_700_000_002.0)
        await store.save_server_ban(changed)
        await store.close()
        again = await self.open_store()
        self.assertEqual(await again.load_server_bans(), [second, changed])
        self.assertTrue(await again.delete_server_ban(second.mask))
        self.assertFalse(await again.delete_server_ban(second.mask))
        self.assertEqual(await again.load_server_bans(), [changed])


class TimingTests(StoreTestCase):
    async def test_each_operation_reports_its_time(self) -> None:
        store = await self.open_store()
        seen: list[tuple[str, float]] = []
        store.observe = lambda operation, seconds: seen.append((operation, seconds))
        await store.create_account(account("Alice"))
        await store.get_account("alice")
        self.assertEqual([op for op, _s in seen], ["create_account", "get_account"])
        self.assertTrue(all(0 <= s < 5 for _op, s in seen))
