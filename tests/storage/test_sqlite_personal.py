"""What the store keeps for users: XMPP personal data (PEP nodes, private storage, vCards)
and block lists."""

from __future__ import annotations

from zope.interface.verify import verifyObject

from chatserver.core.interfaces import IBlockStore
from chatserver.core.records import PepItem, PepNode
from protocols.xmpp.pep_store import IPepStore
from tests.storage.helpers import StoreTestCase, account


class PepStoreTests(StoreTestCase):
    async def test_nodes_round_trip_in_order_and_survive_reopening(self) -> None:
        store = await self.open_store()
        verifyObject(IPepStore, store, tentative=True)
        await store.create_account(account("Alice"))
        items = tuple(PepItem(f"id{n}", f"<x xmlns='urn:x'>{n}é</x>", 1.5 + n) for n in (3, 1, 2))
        node = PepNode("urn:xmpp:bookmarks:1", access_model="whitelist", max_items=0, items=items)
        private = PepNode("storage:bookmarks", kind="private", items=(PepItem("current", "<s/>"),))
        await store.save_pep_node("ALICE", node)
        await store.save_pep_node("alice", private)
        await store.close()
        again = await self.open_store()
        got = await again.get_pep("Alice")
        self.assertEqual(got, [node, private])
        # Saving a node again replaces its configuration and every item.
        changed = PepNode("urn:xmpp:bookmarks:1", persist_items=True, items=items[:1])
        await again.save_pep_node("alice", changed)
        self.assertEqual(await again.get_pep("alice"), [changed, private])
        self.assertTrue(await again.delete_pep_node("alice", "pep", "urn:xmpp:bookmarks:1"))
        self.assertFalse(await again.delete_pep_node("alice", "pep", "urn:xmpp:bookmarks:1"))
        self.assertEqual(await again.get_pep("alice"), [private])

    async def test_deleting_the_account_deletes_its_data(self) -> None:
        store = await self.open_store()
        await store.create_account(account("Bob"))
        await store.save_pep_node("bob", PepNode("n", items=(PepItem("1", "<x/>"),)))
        await store.delete_account("bob")
        self.assertEqual(await store.get_pep("bob"), [])


class BlockStoreTests(StoreTestCase):
    async def test_block_lists_round_trip_and_go_with_the_account(self) -> None:
        store = await self.open_store()
        verifyObject(IBlockStore, store)
        await store.create_account(account("Alice"))
        await store.create_account(account("Bob"))
        await store.add_blocks("Alice", ["mallory", "eve"])
        await store.add_blocks("alice", ["eve"])
        await store.add_blocks("bob", ["alice"])
        await store.close()
        again = await self.open_store()
        self.assertEqual(
            await again.load_blocks(), [("alice", "eve"), ("alice", "mallory"), ("bob", "alice")]
        )
        await again.remove_blocks("alice", ["eve", "nobody"])
        await again.delete_account("bob")
        self.assertEqual(await again.load_blocks(), [("alice", "mallory")])
