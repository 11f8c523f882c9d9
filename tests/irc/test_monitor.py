"""MONITOR: lists, status replies and online/offline notifications from the core's observers."""

from __future__ import annotations

import pytest

from chatserver.core.events import Presence
from protocols.irc.handlers.monitor import MONITOR_LIMIT, index_for
from tests.core.fakes import FakeClient
from tests.irc.conftest import IrcWorld, commands, find, one
from tests.support.memstore import make_service


@pytest.fixture
def world() -> IrcWorld:
    return IrcWorld()


def test_add_reports_online_with_mask_and_offline(world: IrcWorld) -> None:
    alice = world.client("alice")
    bob = world.client("Bob")
    replies = alice.ask("MONITOR + bob,carol,NickServ")
    online = one(replies, "730").params[1].split(",")
    assert online == [bob.user.who().mask, "NickServ!NickServ@irc.test"]
    assert one(replies, "731").params[1] == "carol"


def test_notifications_on_connect_quit_and_nick_change(world: IrcWorld) -> None:
    alice = world.client("alice")
    alice.send("MONITOR + carol,dave")
    alice.take()
    carol = world.client("carol")
    assert [m.params[1] for m in find(alice.take(), "730")] == [carol.user.who().mask]
    carol.send("NICK dave")
    replies = alice.take()
    assert commands(replies) == ["731", "730"]
    assert replies[0].params[1] == "carol"
    assert replies[1].params[1].startswith("dave!")
    carol.send("QUIT :bye")
    assert [(m.command, m.params[1]) for m in alice.take()] == [("731", "dave")]


def test_notifications_reach_monitors_that_share_no_room(world: IrcWorld) -> None:
    # A quit reaches room members as QUIT; a watcher elsewhere still learns of it.
    alice = world.client("alice")
    bob = world.client("bob")
    alice.send("JOIN #a", "MONITOR + bob")
    bob.send("JOIN #b")
    alice.take()
    bob.send("QUIT")
    assert commands(alice.take()) == ["731"]


def test_remove_clear_list_status(world: IrcWorld) -> None:
    alice = world.client("alice")
    world.client("bob")
    alice.send("MONITOR + bob,carol,dave")
    listed = alice.ask("MONITOR L")
    assert commands(listed) == ["732", "733"]
    assert set(listed[0].params[1].split(",")) == {"bob", "carol", "dave"}
    assert alice.ask("MONITOR - carol") == []
    status = alice.ask("MONITOR S")
    assert one(status, "730").params[1].startswith("bob!")
    assert one(status, "731").params[1] == "dave"
    assert alice.ask("MONITOR C") == []
    assert commands(alice.ask("MONITOR L")) == ["733"]
    world.client("dave")
    assert alice.take() == []


def test_duplicates_and_invalid_nicks_are_ignored(world: IrcWorld) -> None:
    alice = world.client("alice")
    alice.send("MONITOR + bob,BOB,#room,9lives")
    assert alice.ask("MONITOR L")[0].params[1] == "bob"


def test_list_full(world: IrcWorld) -> None:
    alice = world.client("alice")
    nicks = [f"n{i}" for i in range(MONITOR_LIMIT + 2)]
    first = ",".join(nicks[: MONITOR_LIMIT - 1])
    alice.send(f"MONITOR + {first}")
    alice.take()
    replies = alice.ask("MONITOR + " + ",".join(nicks[MONITOR_LIMIT - 1 :]))
    full = one(replies, "734")
    assert full.params[1:3] == (str(MONITOR_LIMIT), ",".join(nicks[MONITOR_LIMIT:]))
    assert one(replies, "731").params[1] == nicks[MONITOR_LIMIT - 1]
    assert len(index_for(world.service).targets(alice.conn)) == MONITOR_LIMIT


def test_long_lists_are_split_into_lines_that_fit(world: IrcWorld) -> None:
    alice = world.client("alice")
    nicks = [f"averyveryverylongnick{i:03d}" for i in range(60)]
    for start in range(0, 60, 10):
        alice.send("MONITOR + " + ",".join(nicks[start : start + 10]))
    offline = find(alice.ask("MONITOR S"), "731")
    assert len(offline) > 1
    assert sorted(n for m in offline for n in m.params[1].split(",")) == nicks
    assert all(len(f":irc.test 731 alice :{m.params[1]}\r\n") <= 512 for m in offline)


def test_bad_usage(world: IrcWorld) -> None:
    alice = world.client("alice")
    assert commands(alice.ask("MONITOR")) == ["461"]
    assert commands(alice.ask("MONITOR +")) == ["461"]
    assert one(alice.ask("MONITOR X"), "FAIL").params[:2] == ("MONITOR", "INVALID_PARAMS")


def test_closed_connections_leave_the_index(world: IrcWorld) -> None:
    alice = world.client("alice")
    alice.send("MONITOR + bob")
    index = index_for(world.service)
    alice.lose()
    world.client("bob")
    assert "bob" not in index.watchers
    assert alice.conn not in index.lists


def test_one_index_per_service_subscribed_once() -> None:
    service = make_service()
    assert index_for(service) is index_for(service)
    assert service.observers.count(index_for(service).observe) == 1


def test_core_reports_presence_to_observers() -> None:
    service = make_service()
    seen: list[Presence] = []
    service.observers.append(lambda event: seen.append(event))  # type: ignore[arg-type]
    conn = service.connect(FakeClient())
    service.claim_nick(conn, "amy")
    service.rename(conn, "ann")
    service.quit(conn, "bye")
    assert [(e.who.nick, e.online) for e in seen] == [
        ("amy", True),
        ("amy", False),
        ("ann", True),
        ("ann", False),
    ]


def test_a_failing_observer_does_not_break_the_core() -> None:
    service = make_service()

    def broken(event: object) -> None:
        raise RuntimeError("observer bug")

    service.observers.append(broken)
    conn = service.connect(FakeClient())
    service.claim_nick(conn, "amy")
    assert service.find_user("amy") is not None
