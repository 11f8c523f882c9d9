"""Joins and parts in a big room: the user hears of its own at once, every other member at
the end of the reactor turn with the room's messages, in one batch, in order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chatserver.core.delivery import MEMBERSHIP_BATCH_FROM
from chatserver.core.events import Join, Message, Part, Quit
from chatserver.core.service import ChatService
from chatserver.core.settings import CoreSettings
from tests.core.fakes import FakeClient
from tests.support.memstore import make_service


def user(service: ChatService, nick: str, **kw: Any) -> tuple[FakeClient, Any]:
    client = FakeClient(**kw)
    conn = service.connect(client)
    service.claim_nick(conn, nick)
    return client, conn


class Turns:
    """A service whose reactor turns end when the test says so."""

    def __init__(self, *, end_of_turn: bool = True) -> None:
        self.ends: list[Callable[[], None]] = []
        settings = CoreSettings(scram_iterations=4096, max_connections_per_address=0)
        self.service = make_service(settings, end_of_turn=self.ends.append if end_of_turn else None)

    def end(self) -> None:
        while self.ends:
            self.ends.pop(0)()


def big_room(turns: Turns, members: int = MEMBERSHIP_BATCH_FROM) -> list[tuple[FakeClient, Any]]:
    users = [user(turns.service, f"m{i}") for i in range(members)]
    for _, conn in users:
        turns.service.join(conn, "big")
    turns.end()
    for client, _ in users:
        client.events.clear()
        client.batches.clear()
    return users


def names(events: list[Any]) -> list[str]:
    out = []
    for e in events:
        if isinstance(e, Message):
            out.append(f"say {e.source.nick} {e.text}")
        elif isinstance(e, Join | Part):
            out.append(f"{type(e).__name__.lower()} {e.who.nick}")
    return out


def test_joins_of_one_turn_reach_each_member_in_one_batch_in_order() -> None:
    turns = Turns()
    service = turns.service
    members = big_room(turns)
    watcher = members[0][0]
    newcomers = [user(service, f"new{i}") for i in range(5)]
    turns.end()
    for i, (client, conn) in enumerate(newcomers):
        with service.batch():
            service.join(conn, "big")
        # The joiner's own join comes at once; nobody else has heard of it yet.
        assert names(client.events) == [f"join new{i}"]
        assert watcher.events == []
    before = service.stats["deliveries"]
    turns.end()
    assert len(watcher.batches) == 1
    assert names(watcher.events) == [f"join new{i}" for i in range(5)]
    # A newcomer hears of those who joined after it, not of those before (it was not there).
    assert names(newcomers[0][0].events) == [f"join new{i}" for i in range(5)]
    assert names(newcomers[2][0].events) == ["join new2", "join new3", "join new4"]
    assert names(newcomers[4][0].events) == ["join new4"]
    assert service.stats["deliveries"] > before
    assert service.stats["deliveries"] == sum(service.deliveries_by_protocol.values())


def test_messages_and_membership_keep_their_order_and_a_leaver_hears_what_came_first() -> None:
    turns = Turns()
    service = turns.service
    members = big_room(turns)
    (watcher, _), (talker, ctalk), (leaver, cleave) = members[0], members[1], members[2]
    newcomer, cnew = user(service, "newcomer")
    turns.end()
    newcomer.events.clear()
    with service.batch():
        service.say(ctalk, room="big", text="before")
    with service.batch():
        service.join(cnew, "big")
    with service.batch():
        service.say(ctalk, room="big", text="after")
    with service.batch():
        service.part(cleave, "big", "bye")
    # The leaver got everything the room said while it was there, then its own part.
    assert names(leaver.events) == [
        "say m1 before",
        "join newcomer",
        "say m1 after",
        "part m2",
    ]
    turns.end()
    expected = ["say m1 before", "join newcomer", "say m1 after", "part m2"]
    assert names(watcher.events) == expected and len(watcher.batches) == 1
    assert names(talker.events) == expected
    assert names(newcomer.events) == ["join newcomer", "say m1 after", "part m2"]
    assert names(leaver.events) == expected  # nothing more once gone


def test_a_small_room_hears_of_joins_at_once() -> None:
    turns = Turns()
    service = turns.service
    members = big_room(turns, MEMBERSHIP_BATCH_FROM - 2)
    watcher = members[0][0]
    _, conn = user(service, "late")
    with service.batch():
        service.join(conn, "big")
    assert names(watcher.events) == ["join late"] and watcher.batches == []


def test_without_a_turn_to_end_a_join_outside_a_read_is_delivered_at_once() -> None:
    turns = Turns(end_of_turn=False)
    service = turns.service
    members = big_room(turns)
    _, conn = user(service, "late")
    service.join(conn, "big")
    assert names(members[0][0].events) == ["join late"]


def quits(events: list[Any]) -> list[str]:
    return [e.who.nick for e in events if isinstance(e, Quit)]


def test_quits_reach_everyone_who_shares_a_room_once_and_a_big_room_in_one_batch() -> None:
    turns = Turns()
    service = turns.service
    members = big_room(turns)
    (watcher, _), (friend, cfriend) = members[0], members[1]
    outsider, coutsider = user(service, "outsider")
    service.join(coutsider, "small")
    service.join(cfriend, "small")
    leavers = [user(service, f"gone{i}") for i in range(3)]
    for _, conn in leavers:
        service.join(conn, "big")
        service.join(conn, "small")
    turns.end()
    for client in (watcher, friend, outsider):
        client.events.clear()
        client.batches.clear()
    for _, conn in leavers:
        service.quit(conn, "bye")  # connections lost: not in a read
    # Who shares only the small room hears at once; the big room's members at the turn's end.
    assert quits(outsider.events) == ["gone0", "gone1", "gone2"]
    assert quits(watcher.events) == [] and quits(friend.events) == []
    turns.end()
    assert quits(watcher.events) == ["gone0", "gone1", "gone2"] and len(watcher.batches) == 1
    # In both rooms: once, with the big room.
    assert quits(friend.events) == ["gone0", "gone1", "gone2"]
    assert quits(outsider.events) == ["gone0", "gone1", "gone2"]
    assert service.stats["deliveries"] == sum(service.deliveries_by_protocol.values())


def test_the_fanout_of_a_batched_join_is_counted_when_it_is_caused() -> None:
    turns = Turns()
    service = turns.service
    big_room(turns, 60)
    _, conn = user(service, "late")
    before = service.fanout_caused
    with service.batch():
        service.join(conn, "big")
    assert service.fanout_caused - before == 61


def test_a_joiner_of_a_small_room_gets_nothing_the_room_said_earlier_in_the_turn() -> None:
    # What the room said before the join waits in the turn's batch; the join (delivered at
    # once in a small room) sends that batch out first, to the members as they were: the
    # joiner was not one of them yet, so it must not get it (before its own join at that).
    turns = Turns()
    service = turns.service
    members = big_room(turns, 2)
    (watcher, _), (talker, ctalk) = members
    newcomer, cnew = user(service, "newcomer")
    turns.end()
    newcomer.events.clear()
    with service.batch():
        service.say(ctalk, room="big", text="before")
    with service.batch():
        service.join(cnew, "big")
    with service.batch():
        service.say(ctalk, room="big", text="after")
    turns.end()
    assert names(newcomer.events) == ["join newcomer", "say m1 after"]
    expected = ["say m1 before", "join newcomer", "say m1 after"]
    assert names(watcher.events) == expected
    assert names(talker.events) == expected
    assert service.stats["deliveries"] == sum(service.deliveries_by_protocol.values())
