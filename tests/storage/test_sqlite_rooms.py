"""IRoomStore on SQLite: whole records saved, replaced, loaded and deleted."""

from __future__ import annotations

from chatserver.core.records import BanRecord, RoomRecord
from tests.storage.helpers import StoreTestCase

FULL = RoomRecord(
    name="lobby",
    owner="Alice",
    created_at=1_700_000_000.5,
    topic='Welcome — ünïcode and "quotes" and [json] {chars}',
    topic_by="alice!~a@user/alice",
    topic_at=1_700_000_100.125,
    modes=(("no_outside", None), ("topic_lock", None), ("key", "s3cret"), ("limit", "50")),
    ops=("Alice", "Bob"),
    voices=("Carol",),
    bans=(
        BanRecord("*!*@spam.example", "Alice", 1_700_000_200.0),
        BanRecord("troll!*@*", "Bob", 1_700_000_300.75),
    ),
    invites=("*!*@friends.example",),
    extra={"url": "https://example.org", "lang": "en", "empty": ""},
)


class RoomTests(StoreTestCase):
    async def test_full_record_round_trips(self) -> None:
        store = await self.open_store()
        await store.save_room(FULL)
        self.assertEqual(await store.load_rooms(), [FULL])

    async def test_minimal_record_round_trips(self) -> None:
        store = await self.open_store()
        bare = RoomRecord(name="quiet", owner="Bob", created_at=3.0)
        await store.save_room(bare)
        self.assertEqual(await store.load_rooms(), [bare])

    async def test_save_replaces_the_whole_record(self) -> None:
        store = await self.open_store()
        await store.save_room(FULL)
        smaller = RoomRecord(
            name="lobby",
            owner="Bob",
            created_at=FULL.created_at,
            topic="new topic",
            modes=(("moderated", None),),
            bans=(BanRecord("x!*@*", "Bob", 9.0),),
        )
        await store.save_room(smaller)
        self.assertEqual(await store.load_rooms(), [smaller])

    async def test_load_rooms_returns_every_room_by_name(self) -> None:
        store = await self.open_store()
        rooms = [RoomRecord(name=n, owner="Alice", created_at=1.0) for n in ("zoo", "abc", "m.n")]
        for room in rooms:
            await store.save_room(room)
        self.assertEqual(await store.load_rooms(), sorted(rooms, key=lambda r: r.name))

    async def test_delete_room(self) -> None:
        store = await self.open_store()
        await store.save_room(FULL)
        await store.save_room(RoomRecord(name="other", owner="Bob", created_at=1.0))
        self.assertTrue(await store.delete_room("lobby"))
        self.assertFalse(await store.delete_room("lobby"))
        self.assertEqual([r.name for r in await store.load_rooms()], ["other"])

    async def test_load_rooms_when_empty(self) -> None:
        store = await self.open_store()
        self.assertEqual(await store.load_rooms(), [])
