"""IHistoryStore on SQLite: batches, duplicates, round trips, and every query's order and limit.

The property tests drive the real store from a worker thread (trial keeps the reactor running
on the main thread), comparing each query with a plain sorted-list model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred

from chatserver.core.events import Message, Who
from chatserver.core.records import ArchiveEntry, ArchiveQuery, RoomEventRecord
from tests.storage.helpers import StoreTestCase, account, ids, message

_T = TypeVar("_T")


def blocking(fn: Callable[..., Deferred[_T]], *args: Any) -> _T:
    """From a worker thread: call ``fn`` on the reactor thread and wait for its Deferred."""
    return threads.blockingCallFromThread(reactor, fn, *args)


class HistoryTests(StoreTestCase):
    # The strings the round-trip property stores.
    text = staticmethod(st.text)
    odd_text = "ünïcode \x00 nul, \x01ACTION\x01, emoji 🎉"

    async def test_append_stores_a_batch_and_counts_new_messages(self) -> None:
        store = await self.open_store()
        batch = [message(f"m{i}", float(i)) for i in range(100)]
        self.assertEqual(await store.append(batch), 100)
        self.assertEqual(await store.latest("lobby", 1000), batch)
        self.assertEqual(await store.append([]), 0)

    async def test_append_of_many_statements_keeps_order_and_counts_duplicates(self) -> None:
        # More rows than one INSERT statement takes, with duplicates in several of them.
        store = await self.open_store()
        batch = [message(f"m{i}", float(i)) for i in range(300)]
        self.assertEqual(await store.append(batch[:130]), 130)
        self.assertEqual(await store.append(batch), 170)
        self.assertEqual(await store.latest("lobby", 1000), batch)

    async def test_append_ignores_duplicate_ids_and_keeps_the_first(self) -> None:
        store = await self.open_store()
        first = message("dup", 1.0, text="first")
        self.assertEqual(await store.append([first, message("m2", 2.0)]), 2)
        again = [message("dup", 3.0, text="second"), message("m3", 3.0), message("m3", 4.0)]
        self.assertEqual(await store.append(again), 1)
        self.assertEqual(await store.find("dup"), first)
        self.assertEqual(ids(await store.latest("lobby", 10)), ["dup", "m2", "m3"])

    async def test_append_snapshots_the_batch(self) -> None:
        store = await self.open_store()
        buffer = [message("m1", 1.0), message("m2", 2.0)]
        d = store.append(buffer)
        buffer.clear()  # a caller reusing its buffer must not change what is stored
        self.assertEqual(await d, 2)
        self.assertEqual(ids(await store.latest("lobby", 10)), ["m1", "m2"])

    async def test_what_comes_after_an_append_sees_it(self) -> None:
        store = await self.open_store()
        # Neither awaited before the next call: each operation follows the appends before it.
        appended = store.append([message("m1", 1.0), message("m2", 2.0)])
        found = store.find("m2")
        deleted = store.delete_message("m1")
        private = store.append_private([ArchiveEntry("alice", "bob", message("p1", 3.0))])
        page = store.query_private(ArchiveQuery("alice", None, 10, None, None, True))
        self.assertEqual((await found).id, "m2")
        self.assertEqual(await deleted, 1)
        self.assertEqual(ids(await page), ["p1"])
        self.assertEqual((await appended, await private), (2, 1))
        self.assertEqual(ids(await store.latest("lobby", 10)), ["m2"])

    async def test_a_bad_record_fails_its_whole_batch(self) -> None:
        store = await self.open_store()
        nowhere = Message(ts=2.0, id="m2", source=Who("a", "b", "c"), text="lost")
        with self.assertRaises(ValueError):
            await store.append([message("m1", 1.0), nowhere])
        self.assertEqual(await store.latest("lobby", 10), [])

    async def test_every_field_round_trips(self) -> None:
        store = await self.open_store()
        msgs = [
            message(
                "m1",
                1_700_000_000.123456,
                text=self.odd_text,
                tags=(("+draft/reply", "m0"), ("+typing", ""), ("a;b", "c d\\e")),
            ),
            message("m2", 1_700_000_001.5, kind="notice", account=None, nick="guest1"),
            message("m3", 1_700_000_002.0, kind="action", text=""),
        ]
        await store.append(msgs)
        loaded = await store.latest("lobby", 10)
        self.assertEqual(loaded, msgs)
        self.assertEqual(loaded[0].tags, msgs[0].tags)
        self.assertIsInstance(loaded[0].tags, tuple)
        self.assertTrue(all(m.origin is None for m in loaded))
        self.assertEqual(await store.find("m1"), msgs[0])

    async def test_a_private_message_is_stored_under_its_target(self) -> None:
        store = await self.open_store()
        private = message("p1", 1.0, room=None, target="bob")
        await store.append([private])
        (loaded,) = await store.latest("bob", 10)
        # Loaded messages always name their target as ``room`` (see IHistoryStore).
        self.assertEqual(loaded.room, "bob")
        self.assertEqual(loaded.text, private.text)

    async def test_unstorable_text_is_replaced_not_fatal(self) -> None:
        # A lone surrogate (what surrogateescape makes of invalid UTF-8) cannot be stored as
        # SQLite text; it must not cost the rest of the batch.
        store = await self.open_store()
        bad = message("bad", 1.0, text="broken \udcff byte", tags=(("k", "\udc80"),))
        good = message("good", 2.0)
        self.assertEqual(await store.append([bad, good]), 2)
        loaded_bad, loaded_good = await store.latest("lobby", 10)
        self.assertEqual(loaded_bad.text, "broken ? byte")
        self.assertEqual(loaded_bad.tags, (("k", "?"),))
        self.assertEqual(loaded_good, good)

    async def test_unstorable_text_in_any_field_is_replaced(self) -> None:
        # Whichever field holds it (the sender's nick, ident, host, account or real name as
        # well as the text), a lone surrogate is replaced and the row stored.
        store = await self.open_store()
        fields = ("nick", "ident", "host", "account", "realname")
        msgs = []
        for i, name in enumerate(fields):
            values = {f: f"{f}{i}" for f in fields}
            values[name] += "\udcff"
            who = Who(
                values["nick"],
                values["ident"],
                values["host"],
                values["account"],
                values["realname"],
            )
            msgs.append(Message(ts=float(i), id=f"m{i}", source=who, text="ok", room="lobby"))
        self.assertEqual(await store.append(msgs), len(msgs))
        loaded = await store.latest("lobby", 10)
        for i, (name, msg) in enumerate(zip(fields, loaded, strict=True)):
            self.assertEqual(getattr(msg.source, name), f"{name}{i}?")
            self.assertEqual(msg.text, "ok")

    async def test_queries_take_the_messages_nearest_the_anchor(self) -> None:
        store = await self.open_store()
        msgs = [message(f"m{i:02d}", float(i)) for i in range(1, 11)]  # ts 1..10
        await store.append([*msgs, message("other", 5.0, room="elsewhere")])
        self.assertEqual(ids(await store.latest("lobby", 3)), ["m08", "m09", "m10"])
        self.assertEqual(ids(await store.before("lobby", 5.0, 2)), ["m03", "m04"])
        self.assertEqual(ids(await store.after("lobby", 5.0, 2)), ["m06", "m07"])
        self.assertEqual(ids(await store.between("lobby", 2.0, 9.0, 3)), ["m03", "m04", "m05"])
        self.assertEqual(ids(await store.between("lobby", 2.0, 5.0, 10)), ["m03", "m04"])
        self.assertEqual(ids(await store.between("lobby", 9.0, 2.0, 10)), [])
        self.assertEqual(len(await store.latest("lobby", 100)), 10)
        self.assertEqual(ids(await store.latest("elsewhere", 100)), ["other"])
        self.assertEqual(await store.latest("nowhere", 100), [])

    async def test_equal_timestamps_order_by_id(self) -> None:
        store = await self.open_store()
        await store.append([message(i, 1.0) for i in ("c", "a", "b")] + [message("z", 0.5)])
        self.assertEqual(ids(await store.latest("lobby", 2)), ["b", "c"])
        self.assertEqual(ids(await store.after("lobby", 0.5, 2)), ["a", "b"])
        self.assertEqual(ids(await store.before("lobby", 1.0, 5)), ["z"])  # strictly older

    async def test_limit_zero_and_negative(self) -> None:
        store = await self.open_store()
        await store.append([message("m1", 1.0)])
        self.assertEqual(await store.latest("lobby", 0), [])
        self.assertEqual(await store.targets(0.0, 2.0, 0), [])
        with self.assertRaises(ValueError):
            await store.latest("lobby", -1)
        with self.assertRaises(ValueError):
            await store.targets(0.0, 2.0, -1)

    async def test_find(self) -> None:
        store = await self.open_store()
        m = message("needle", 3.0, room="hay")
        await store.append([message("m1", 1.0), m])
        self.assertEqual(await store.find("needle"), m)
        self.assertIsNone(await store.find("missing"))

    async def test_room_events_round_trip_page_and_go_with_a_purge(self) -> None:
        store = await self.open_store()
        who = Who("alice", "~a", "user/alice", None, "Alice Liddell")
        events = [
            RoomEventRecord("e1", "lobby", 1.0, "join", who),
            RoomEventRecord("e2", "lobby", 2.0, "topic", who, "the topic \x00 ünï"),
            RoomEventRecord("e3", "lobby", 2.0, "kick", who, "out", "bob"),
            RoomEventRecord("e4", "other", 3.0, "part", who, "bye"),
            RoomEventRecord("e5", "lobby", 4.0, "nick", who, "alicia"),
        ]
        self.assertEqual(await store.append_events(events), 5)
        self.assertEqual(await store.append_events(events[:1]), 0)
        page = await store.query_events(ArchiveQuery("lobby", None, 10))
        self.assertEqual([e.id for e in page], ["e1", "e2", "e3", "e5"])
        self.assertEqual(page[2], events[2])
        self.assertEqual(page[1].text.replace("\ufffd", "\x00"), "the topic \x00 ünï")
        newest = await store.query_events(ArchiveQuery("lobby", None, 2, newest=True))
        self.assertEqual([e.id for e in newest], ["e3", "e5"])
        after = await store.query_events(
            ArchiveQuery("lobby", None, 10, after=(2.0, "\uffff"), newest=False)
        )
        self.assertEqual([e.id for e in after], ["e5"])
        before = await store.query_events(ArchiveQuery("lobby", None, 10, before=(2.0, "e3")))
        self.assertEqual([e.id for e in before], ["e1", "e2"])
        self.assertEqual(await store.find_event("e4"), events[3])
        self.assertIsNone(await store.find_event("missing"))
        # Retention takes the oldest events, as it does messages.
        self.assertEqual(await store.expire("room_events", 1.5, 10), 1)
        page = await store.query_events(ArchiveQuery("lobby", None, 10))
        self.assertEqual([e.id for e in page], ["e2", "e3", "e5"])
        # A rename moves them (and the messages) to the new name.
        await store.append([message("m1", 1.0)])
        self.assertEqual(await store.rename_target("lobby", "hall"), 1)
        self.assertEqual(await store.query_events(ArchiveQuery("lobby", None, 10)), [])
        self.assertEqual(len(await store.query_events(ArchiveQuery("hall", None, 10))), 3)
        self.assertEqual(ids(await store.latest("hall", 10)), ["m1"])
        await store.purge("hall")
        self.assertEqual(await store.query_events(ArchiveQuery("hall", None, 10)), [])
        self.assertEqual(len(await store.query_events(ArchiveQuery("other", None, 10))), 1)

    async def test_targets(self) -> None:
        store = await self.open_store()
        await store.append(
            [
                message("a1", 1.0, room="a"),
                message("a2", 7.0, room="a"),
                message("b1", 3.0, room="b"),
                message("c1", 5.0, room="c"),
                message("c2", 9.0, room="c"),
                message("d1", 3.0, room="d"),
            ]
        )
        self.assertEqual(
            await store.targets(0.0, 10.0, 10), [("b", 3.0), ("d", 3.0), ("a", 7.0), ("c", 9.0)]
        )
        # A target is in the window when its latest message is: "a" (latest 7.0, on the
        # bound) and "c" (latest 9.0) have been spoken in since.
        self.assertEqual(await store.targets(1.0, 7.0, 10), [("b", 3.0), ("d", 3.0)])
        self.assertEqual(
            await store.targets(2.0, 9.5, 10), [("b", 3.0), ("d", 3.0), ("a", 7.0), ("c", 9.0)]
        )
        self.assertEqual(await store.targets(0.0, 10.0, 2), [("b", 3.0), ("d", 3.0)])
        self.assertEqual(await store.targets(20.0, 30.0, 10), [])

    async def test_queries_match_a_sorted_list_model(self) -> None:
        store = await self.open_store()
        await threads.deferToThread(check_queries_against_model, store)

    async def test_arbitrary_messages_round_trip(self) -> None:
        store = await self.open_store()
        await threads.deferToThread(check_round_trip, store, self.text)


# -- property tests (run in a worker thread) -----------------------------------------------

ROOMS = ("r0", "r1", "r2")
# Few distinct timestamps, so that ties (ordered by id) and anchors equal to a ts are common.
timestamps = st.integers(0, 24).map(lambda i: i / 2)
entries = st.lists(
    st.tuples(st.sampled_from(ROOMS), timestamps, st.text("abcXYZ09-", min_size=1, max_size=3)),
    max_size=40,
    unique_by=lambda entry: entry[2],
)
limits = st.integers(0, 8)
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def check_queries_against_model(store: Any) -> None:
    examples = iter(range(1_000_000))

    @PROPERTY_SETTINGS
    @given(
        entries=entries,
        room=st.sampled_from(ROOMS),
        anchor=timestamps,
        start=timestamps,
        end=timestamps,
        limit=limits,
    )
    def check(
        entries: list[tuple[str, float, str]],
        room: str,
        anchor: float,
        start: float,
        end: float,
        limit: int,
    ) -> None:
        # All examples share one database; a prefix on ids and targets, and a time offset,
        # keep each example's messages apart from every earlier one's.
        n = next(examples)
        offset = n * 100.0
        pre = f"{n}:"
        msgs = [message(pre + msgid, offset + ts, pre + r) for r, ts, msgid in entries]
        half = len(msgs) // 2
        blocking(store.append, msgs[half:])
        blocking(store.append, msgs)  # the second half again: duplicates are ignored
        target, anchor, start, end = pre + room, offset + anchor, offset + start, offset + end

        def model(keep: Callable[[Message], bool]) -> list[Message]:
            return sorted(
                (m for m in msgs if m.room == target and keep(m)), key=lambda m: (m.ts, m.id)
            )

        def newest(ms: list[Message]) -> list[Message]:
            return ms[max(0, len(ms) - limit) :]

        assert blocking(store.latest, target, limit) == newest(model(lambda m: True))
        assert blocking(store.before, target, anchor, limit) == newest(
            model(lambda m: m.ts < anchor)
        )
        assert (
            blocking(store.after, target, anchor, limit) == model(lambda m: m.ts > anchor)[:limit]
        )
        assert (
            blocking(store.between, target, start, end, limit)
            == model(lambda m: start < m.ts < end)[:limit]
        )

        latest: dict[str, float] = {}
        for m in msgs:
            if start < m.ts:
                assert m.room is not None
                latest[m.room] = max(m.ts, latest.get(m.room, m.ts))
        # Listed when the latest message is inside the window.
        inside = [(room, ts) for room, ts in latest.items() if ts < end]
        expected = sorted(inside, key=lambda item: (item[1], item[0]))[:limit]
        assert blocking(store.targets, start, end, limit) == expected

    check()


def check_round_trip(store: Any, text: Callable[..., st.SearchStrategy[str]]) -> None:
    """``text(max_size=...)`` makes the strings to store."""
    examples = iter(range(1_000_000))
    optional_text = st.none() | text(max_size=20)

    @PROPERTY_SETTINGS
    @given(
        ts=st.floats(allow_nan=False, allow_infinity=False),
        who=st.builds(Who, text(max_size=30), text(max_size=10), text(), optional_text),
        text=text(),
        kind=st.sampled_from(["privmsg", "notice", "action"]),
        tags=st.lists(st.tuples(text(), text()), max_size=4).map(tuple),
    )
    def check(ts: float, who: Who, text: str, kind: Any, tags: tuple[tuple[str, str], ...]) -> None:
        msgid = f"rt{next(examples)}"
        msg = Message(ts=ts, id=msgid, source=who, text=text, kind=kind, room="rt", tags=tags)
        assert blocking(store.append, [msg]) == 1
        assert blocking(store.find, msgid) == msg

    check()


class HistoryWriterTests(HistoryTests):
    """The same, with appends written by the writer process."""

    writer = True

    async def test_the_writer_and_the_thread_write_at_once_without_an_error(self) -> None:
        store = await self.open_store()
        # Each account waits for the batch before it while the next batch is being written:
        # two processes take the write lock in turn, and the busy timeout hides it.
        calls = []
        for i in range(30):
            batch = [message(f"m{i}-{j}", i + j / 100) for j in range(100)]
            calls.append(store.append(batch))
            calls.append(store.create_account(account(f"user{i}")))
        for call in calls:
            await call
        self.assertEqual(len(await store.latest("lobby", 5000)), 3000)
        self.assertEqual(len(await store.list_accounts()), 30)
