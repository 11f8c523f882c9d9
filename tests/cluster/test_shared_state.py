"""Rooms' state, invitations and accounts are one across the nodes of a cluster: what is
changed on one node holds on the other at once, as IRC clients on each node see it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.cluster.test_cluster import eventually, irc, join, line, members, try_nick
from tests.support.postgres import PostgresServer
from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(120)

Node = Callable[..., ServerProcess]


def reply(client: LineClient, nick: str, command: str, numeric: str, end: str) -> list[str]:
    """The lines of numeric ``numeric`` a command gets, up to the ``end`` numeric, each
    without the server's name and the nick (so two nodes' answers compare)."""
    client.send(command)
    found = []
    while True:
        text = client.expect(lambda t: f" {numeric} {nick} " in t or f" {end} {nick} " in t)
        if f" {end} {nick} " in text:
            return found
        found.append(text.split(f" {numeric} {nick} ", 1)[1])


def modes(client: LineClient, nick: str, room: str) -> str:
    client.send(f"MODE #{room}")
    return client.expect(f" 324 {nick} ").split(f" 324 {nick} ", 1)[1]


def lists(client: LineClient, nick: str, room: str) -> dict[str, list[str]]:
    """The ban, ban-exception and invite-exception lists, with setter and time."""
    return {
        "b": reply(client, nick, f"MODE #{room} b", "367", "368"),
        "e": reply(client, nick, f"MODE #{room} e", "348", "349"),
        "I": reply(client, nick, f"MODE #{room} I", "346", "347"),
    }


def names(client: LineClient, nick: str, room: str) -> list[str]:
    found = reply(client, nick, f"NAMES #{room}", "353", "366")
    return sorted(n for text in found for n in text.rsplit(":", 1)[1].split())


def topic(client: LineClient, nick: str, room: str) -> tuple[str, str]:
    """(the topic, its setter and time) as TOPIC answers."""
    client.send(f"TOPIC #{room}")
    text = client.expect(f" 332 {nick} ").split(f" 332 {nick} ", 1)[1]
    by = client.expect(f" 333 {nick} ").split(f" 333 {nick} ", 1)[1]
    return text, by


def agree(a: Callable[[], object], b: Callable[[], object], what: str) -> object:
    """Wait until both nodes answer alike; the answer."""
    found: list[object] = []

    def same() -> bool:
        found[:] = [a(), b()]
        return found[0] == found[1]

    try:
        eventually(same, 10, f"both nodes agree on {what}")
    except AssertionError as err:
        raise AssertionError(f"{err}: {found}") from None
    return found[0]


def irc_tags(server: ServerProcess, nick: str) -> LineClient:
    """An IRC client with message-tags (it sees msgids)."""
    client = LineClient(server.ports["irc"])
    client.send("CAP REQ :message-tags")
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick}")
    client.send("CAP END")
    client.expect(lambda text: f" 001 {nick} " in text)
    return client


def test_room_modes_lists_topic_and_status_agree_on_both_nodes(make_node: Node) -> None:
    a = make_node("a")
    b = make_node("b")
    alice = irc_tags(a, "alice")
    alice.send("JOIN #dev")
    alice.expect(" 366 alice #dev ")
    bob = irc_tags(b, "bob")
    eventually(lambda: names(bob, "bob", "dev") == ["@alice"], 10, "node b knows #dev")
    bob.send("JOIN #dev")
    alice.expect(lambda text: ":bob!" in text and " JOIN #dev" in text)

    # Flags, key and limit set on node a: node b shows the change and holds the same modes.
    alice.send("MODE #dev +mslk 10 secret")
    alice.expect(lambda text: " MODE #dev +" in text and ":alice!" in text)
    change = bob.expect(lambda text: " MODE #dev " in text)
    assert ":alice!" in change and "+" in change
    assert agree(lambda: modes(alice, "alice", "dev"), lambda: modes(bob, "bob", "dev"), "modes")
    assert "m" in modes(bob, "bob", "dev").split()[1]

    # The lists, each entry with its setter and time.
    alice.send("MODE #dev +beI evil!*@* friend!*@* guest!*@*")
    bob.expect(lambda text: " MODE #dev " in text and "evil!*@*" in text)
    found = agree(lambda: lists(alice, "alice", "dev"), lambda: lists(bob, "bob", "dev"), "lists")
    assert isinstance(found, dict)
    assert [entry.split()[1] for entry in found["b"]] == ["evil!*@*"]
    assert "alice!" in found["b"][0]
    assert [entry.split()[1].lstrip(":") for entry in found["e"]] == ["friend!*@*"]
    assert [entry.split()[1].lstrip(":") for entry in found["I"]] == ["guest!*@*"]

    # A voice given on node a lets bob speak on node b in the moderated room.
    bob.send("PRIVMSG #dev :not yet")
    assert " 404 bob #dev " in bob.expect(" 404 ")
    alice.send("MODE #dev +v bob")
    bob.expect(lambda text: " MODE #dev +v bob" in text)
    bob.send("PRIVMSG #dev :voiced now")
    assert alice.expect("voiced now").endswith("PRIVMSG #dev :voiced now")

    # An op given on node a: bob changes the room on node b, and node a follows.
    alice.send("MODE #dev +o bob")
    bob.expect(lambda text: " MODE #dev +o bob" in text)
    assert agree(lambda: names(alice, "alice", "dev"), lambda: names(bob, "bob", "dev"), "ops")
    bob.send("MODE #dev -m-b evil!*@*")
    alice.expect(lambda text: ":bob!" in text and " MODE #dev -m" in text)
    assert "m" not in modes(alice, "alice", "dev").split()[1]
    assert lists(alice, "alice", "dev")["b"] == []

    # The topic, its setter and time, and its msgid.
    alice.send("TOPIC #dev :set on a")
    mine = alice.expect(lambda text: " TOPIC #dev :set on a" in text)
    theirs = bob.expect(lambda text: " TOPIC #dev :set on a" in text)
    msgid = [tag for tag in mine.split(" ", 1)[0].lstrip("@").split(";") if "msgid=" in tag]
    assert msgid and msgid[0] in theirs.split(" ", 1)[0]
    assert topic(alice, "alice", "dev") == topic(bob, "bob", "dev")
    assert topic(bob, "bob", "dev")[1].startswith("#dev alice!")


def test_a_node_that_starts_later_gets_each_rooms_current_state(make_node: Node) -> None:
    a = make_node("a")
    b = make_node("b")
    alice = irc(a, "alice")
    alice.send("JOIN #dev")
    alice.expect(" 366 alice #dev ")
    alice.send("MODE #dev +imk secret")
    alice.send("MODE #dev +b evil!*@*")
    alice.send("TOPIC #dev :before c")
    alice.expect(" TOPIC #dev :before c")
    # Non-members compare (a member would see the key itself).
    dave = irc(a, "dave")
    bob = irc(b, "bob")
    eventually(lambda: names(bob, "bob", "dev") == ["@alice"], 10, "node b knows #dev")
    assert agree(lambda: modes(dave, "dave", "dev"), lambda: modes(bob, "bob", "dev"), "modes")

    c = make_node("c")
    carol = irc(c, "carol")
    eventually(lambda: names(carol, "carol", "dev") == ["@alice"], 10, "node c knows #dev")
    found = agree(lambda: modes(dave, "dave", "dev"), lambda: modes(carol, "carol", "dev"), "")
    assert found == "#dev +imntk :*"
    assert lists(carol, "carol", "dev") == lists(alice, "alice", "dev")
    assert topic(carol, "carol", "dev") == topic(alice, "alice", "dev")
    # So node c refuses a join the room's modes refuse.
    carol.send("JOIN #dev")
    assert " 473 carol #dev " in carol.expect(" 473 ")


def test_changes_made_at_once_on_two_nodes_end_the_same_on_both(make_node: Node) -> None:
    a = make_node("a")
    b = make_node("b")
    alice = irc(a, "alice")
    alice.send("JOIN #dev")
    alice.expect(" 366 alice #dev ")
    bob = irc(b, "bob")
    eventually(lambda: names(bob, "bob", "dev") == ["@alice"], 10, "node b knows #dev")
    bob.send("JOIN #dev")
    alice.expect(lambda text: ":bob!" in text and " JOIN #dev" in text)
    alice.send("MODE #dev +o bob")
    bob.expect(" MODE #dev +o bob")
    # Each node's op changes the same modes the other way, without waiting for the other.
    for i in range(10):
        alice.send(f"MODE #dev +m-s+l {i + 5}")
        bob.send(f"MODE #dev -m+s+l {i + 50}")
    agree(lambda: modes(alice, "alice", "dev"), lambda: modes(bob, "bob", "dev"), "modes")


def test_an_invitation_on_one_node_lets_the_user_join_on_the_other(make_node: Node) -> None:
    a = make_node("a")
    b = make_node("b")
    alice = irc(a, "alice")
    alice.send("JOIN #dev")
    alice.expect(" 366 alice #dev ")
    alice.send("MODE #dev +i")
    alice.expect(" MODE #dev +i")
    carol = irc(b, "carol")
    eventually(lambda: names(carol, "carol", "dev") == ["@alice"], 10, "node b knows #dev")
    eventually(lambda: "i" in modes(carol, "carol", "dev").split()[1], 10, "+i on node b")
    carol.send("JOIN #dev")
    assert " 473 carol #dev " in carol.expect(" 473 ")

    alice.send("INVITE carol #dev")
    alice.expect(" 341 alice carol :#dev")
    # Her own node tells her, and lets her in.
    assert carol.expect(" INVITE ").startswith(":alice!")
    carol.send("JOIN #dev")
    carol.expect(" 366 carol #dev ")
    alice.expect(lambda text: text.startswith(":carol!") and " JOIN #dev" in text)
    # The invitation was one-shot on both nodes: after a kick she cannot come back.
    alice.send("KICK #dev carol :bye")
    carol.expect(" KICK #dev carol ")
    carol.send("JOIN #dev")
    assert " 473 carol #dev " in carol.expect(" 473 ")


def test_a_key_and_a_ban_set_on_one_node_hold_on_the_other(make_node: Node) -> None:
    a = make_node("a")
    b = make_node("b")
    alice = irc(a, "alice")
    alice.send("JOIN #dev")
    alice.expect(" 366 alice #dev ")
    alice.send("MODE #dev +k secret")
    alice.send("MODE #dev +b mallory!*@*")
    alice.expect(" MODE #dev +b mallory!*@*")
    watcher = line(b, "watcher")
    members(watcher, "dev", 1)
    dave = irc(b, "dave")
    eventually(lambda: "k" in modes(dave, "dave", "dev").split()[1], 10, "+k on node b")
    dave.send("JOIN #dev wrong")
    assert " 475 dave #dev " in dave.expect(" 475 ")
    dave.send("JOIN #dev secret")
    dave.expect(" 366 dave #dev ")
    mallory = irc(b, "mallory")
    mallory.send("JOIN #dev secret")
    assert " 474 mallory #dev " in mallory.expect(" 474 ")


def test_registrations_on_one_node_are_known_to_the_other_at_once(
    make_node: Node, postgres: PostgresServer
) -> None:
    dsn = postgres.new_database()
    shared = {"storage": {"backend": "postgresql", "dsn": dsn}}
    a = make_node("a", overrides=shared)
    b = make_node("b", overrides=shared)

    # An account made on node a: its nick is protected on node b at once.
    erin = line(a, "erin")
    erin.send("/register erin-secret-1")
    erin.expect("registered")
    erin.close()
    eventually(lambda: "already in use" not in try_nick(b, "erin"), 10, "erin left")
    answer = try_nick(b, "erin")
    assert answer.startswith("!!! error:") and "registered" in answer, answer

    # A room registered on node a stays on node b when everyone has left it.
    fred = line(a, "fred")
    fred.send("/register fred-secret-1")
    fred.expect("registered")
    join(fred, "keep")
    fred.send("/register-room #keep")
    fred.expect("#keep is now registered")
    watcher = line(b, "watcher")
    fred.send("/part keep")
    fred.expect("you left #keep")
    assert members(watcher, "keep", 0) == "*** members of #keep (0): "

    # Dropped on node a: the nick is free on node b at once.
    fred.send("/drop fred-secret-1")
    fred.read_until_closed()
    eventually(lambda: "You are fred" in try_nick(b, "fred"), 10, "fred is free on node b")
