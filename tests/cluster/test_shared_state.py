"""Rooms' state, invitations and accounts are one across the nodes of a cluster: what is
changed on one node holds on the other at once, as IRC clients on each node see it."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cluster.test_cluster import (
    alice_and_bob_in_dev,
    claimed,
    eventually,
    irc,
    join,
    line,
    members,
    try_nick,
)
from tests.ops.helpers import OPER_PASSWORD, OpsServer, cli, free_port, operators_toml
from tests.ops.test_metrics import get, samples
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer
from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(120)

Node = Callable[..., ServerProcess]
# Without flood control, so that two clients' lines reach their nodes in the same instant.
UNTHROTTLED = {"irc": {"flood_burst": 0}}


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


def irc_alice_and_bob_in_dev(
    a: ServerProcess,
    b: ServerProcess,
    connect: Callable[[ServerProcess, str], LineClient] = irc,
) -> tuple[LineClient, LineClient]:
    """IRC users alice on ``a`` (the operator of #dev: she makes it) and bob on ``b``, each
    made by ``connect``, both in #dev, alice having seen bob join."""
    alice = connect(a, "alice")
    alice.send("JOIN #dev")
    alice.expect(" 366 alice #dev ")
    bob = connect(b, "bob")
    eventually(lambda: names(bob, "bob", "dev") == ["@alice"], 10, "node b knows #dev")
    bob.send("JOIN #dev")
    alice.expect(lambda text: ":bob!" in text and " JOIN #dev" in text)
    return alice, bob


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
    alice, bob = irc_alice_and_bob_in_dev(a, b, irc_tags)

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
    a = make_node("a", overrides=UNTHROTTLED)
    b = make_node("b", overrides=UNTHROTTLED)
    alice, bob = irc_alice_and_bob_in_dev(a, b)
    alice.send("MODE #dev +o bob")
    bob.expect(" MODE #dev +o bob")
    # Each node's op changes the same modes the other way, without waiting for the other.
    for i in range(10):
        alice.send(f"MODE #dev +m-s+l {i + 5}")
        bob.send(f"MODE #dev -m+s+l {i + 50}")
    agree(lambda: modes(alice, "alice", "dev"), lambda: modes(bob, "bob", "dev"), "modes")


def test_an_invitation_on_one_node_lets_the_user_join_on_the_other(
    make_node: Node, redis: RedisServer
) -> None:
    a = make_node("a")
    b = make_node("b")
    alice = irc(a, "alice")
    alice.send("JOIN #dev")
    alice.expect(" 366 alice #dev ")
    alice.send("MODE #dev +i")
    alice.expect(" MODE #dev +i")
    carol = irc(b, "carol")
    # Node a must know carol before alice can invite her.
    claimed(redis, "carol", "b")
    eventually(lambda: "already in use" in try_nick(a, "carol"), 10, "node a knows carol")
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
    # The node that has the key's setter sees him in: his node checked the key.
    alice.expect(lambda text: text.startswith(":dave!") and " JOIN #dev" in text)
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
    # Its registration dropped on node a (through ChanServ, from a second connection of
    # fred's): node b lets the empty room go.
    chanserv = irc(a, "fredirc")
    chanserv.send("PRIVMSG NickServ :IDENTIFY fred fred-secret-1")
    chanserv.expect("You are now logged in as fred")
    chanserv.send("PRIVMSG ChanServ :DROP #keep")
    assert "no longer registered" in chanserv.expect("no longer registered")

    def gone() -> bool:
        watcher.send("/who keep")
        return "no such room" in watcher.expect(lambda t: "members of" in t or "no such" in t)

    eventually(gone, 10, "node b lets #keep go")
    fred.send("/drop fred-secret-1")
    fred.read_until_closed()
    eventually(lambda: "You are fred" in try_nick(b, "fred"), 10, "fred is free on node b")


def test_a_login_is_known_everywhere_and_a_second_node_hands_the_same_account_to_it(
    make_node: Node, postgres: PostgresServer
) -> None:
    """One account is on one node at a time: a login to it on another node goes to that
    node, and its user stays what it was there."""
    shared = {"storage": {"backend": "postgresql", "dsn": postgres.new_database()}}
    a = make_node("a", overrides=shared)
    b = make_node("b", overrides=shared)
    erin = line(a, "erin")
    erin.send("/register erin-secret-1")
    erin.expect("erin is now registered")
    join(erin, "dev")
    watcher = irc(b, "watcher")

    # Node b knows erin is logged in (WHOIS says so there).
    def logged_in() -> bool:
        found = reply(watcher, "watcher", "WHOIS erin", "330", "318")
        return any("erin" in text for text in found)

    eventually(logged_in, 10, "node b knows erin's account")

    visitor = line(b, "visitor")
    visitor.send("/identify erin erin-secret-1")
    visitor.expect("you are now logged in as erin (with your other session)")
    # The visitor is erin's second connection; erin is still erin, in her room.
    visitor.send("/who dev")
    assert visitor.expect("members of #dev") == "*** members of #dev (1): @erin"
    erin.send("still here")
    assert visitor.expect("still here") == "[#dev] <erin> still here"

    # IRC SASL after registration goes to node a the same way.
    sasl = irc(b, "other")
    sasl.send("CAP REQ :sasl")
    sasl.expect(" ACK ")
    sasl.send("AUTHENTICATE PLAIN")
    sasl.expect("AUTHENTICATE +")
    sasl.send("AUTHENTICATE " + base64.b64encode(b"erin\0erin\0erin-secret-1").decode())
    done = sasl.expect(lambda t: " 903 " in t or " 904 " in t)
    assert " 903 erin " in done, done


def test_server_bans_hold_on_every_node(redis: RedisServer, tmp_path: Path) -> None:
    cluster = {"redis": redis.url, "lease": 3.0}
    a = OpsServer(
        tmp_path / "a",
        protocols=("line", "irc"),
        overrides={"cluster": {**cluster, "node": "a"}},
        extra=operators_toml(),
    )
    b = OpsServer(
        tmp_path / "b", protocols=("line", "irc"), overrides={"cluster": {**cluster, "node": "b"}}
    )
    with a, b:
        mallory = irc(b, "mallory")
        oper = irc(a, "oper")
        oper.send(f"OPER admin {OPER_PASSWORD}")
        oper.expect(" 381 ")
        claimed(redis, "mallory", "b")
        eventually(lambda: "already in use" in try_nick(a, "mallory"), 10, "a knows mallory")
        oper.send("KLINE mallory!*@* :spam")
        oper.expect("Added K-line on mallory!*@*")
        # Her own node holds the ban too: it ends her connection, and refuses her again.
        assert "spam" in mallory.expect("ERROR")
        mallory.read_until_closed()
        again = try_nick(b, "mallory")
        assert "banned" in again and "spam" in again, again
        oper.send("UNKLINE mallory!*@*")
        oper.expect("Removed K-line")
        eventually(lambda: "You are mallory" in try_nick(b, "mallory"), 10, "ban lifted on b")


def test_a_room_renamed_and_metadata_set_on_one_node_hold_on_the_other(make_node: Node) -> None:
    a = make_node("a")
    b = make_node("b")
    alice = irc_tags(a, "alice")
    alice.send("CAP REQ :draft/channel-rename draft/metadata-2")
    alice.send("JOIN #old")
    alice.expect(" 366 alice #old ")
    bob = irc_tags(b, "bob")
    bob.send("CAP REQ :draft/channel-rename draft/metadata-2")
    eventually(lambda: names(bob, "bob", "old") == ["@alice"], 10, "node b knows #old")
    bob.send("JOIN #old")
    alice.expect(lambda text: ":bob!" in text and " JOIN #old" in text)

    alice.send("RENAME #old #new :moving")
    assert " RENAME #old #new :moving" in bob.expect(" RENAME ")
    assert names(bob, "bob", "new") == ["@alice", "bob"]
    bob.send("PRIVMSG #new :in the new room")
    assert alice.expect("in the new room").endswith("PRIVMSG #new :in the new room")

    alice.send("METADATA * SET display-name :Alice on a")
    alice.expect(" 761 ")
    alice.send("METADATA #new SET url :https://example.org")
    alice.expect(" 761 ")

    def value(client: LineClient, target: str, key: str) -> str:
        client.send(f"METADATA {target} GET {key}")
        text = client.expect(lambda t: " 761 " in t or " 766 " in t or " FAIL " in t)
        return text.rsplit(":", 1)[1] if " 761 " in text else ""

    eventually(lambda: value(bob, "alice", "display-name") == "Alice on a", 10, "on node b")
    eventually(lambda: value(bob, "#new", "url").endswith("example.org"), 10, "the room's")

    # A node that starts later learns the users' metadata set before.
    c = make_node("c")
    carol = irc_tags(c, "carol")
    carol.send("CAP REQ :draft/metadata-2")
    seen: list[list[str]] = []
    try:
        eventually(
            lambda: seen.append(names(carol, "carol", "new")) or seen[-1] == ["@alice", "bob"],
            10,
            "node c knows",
        )
    except AssertionError:
        raise AssertionError(f"node c shows #new as {seen[-1]}") from None
    assert value(carol, "alice", "display-name") == "Alice on a"


def test_metrics_count_each_nodes_own_users_so_that_they_sum(make_node: Node) -> None:
    ports = {"a": free_port(), "b": free_port()}
    servers = {
        name: make_node(name, overrides={"metrics": {"enabled": True, "port": port}})
        for name, port in ports.items()
    }
    alice = line(servers["a"], "alice")
    join(alice, "dev")
    bob = line(servers["b"], "bob")
    members(bob, "dev", 1)
    join(bob, "dev")
    for i in range(3):
        alice.send(f"from a {i}")
    for i in range(2):
        bob.send(f"from b {i}")
    bob.expect("from a 2")
    alice.expect("from b 1")

    def figures(name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return samples(get(f"http://127.0.0.1:{ports[name]}/metrics")[2])

    a, b = figures("a"), figures("b")
    line_label = (("protocol", "line"),)
    assert a[("chatserver_connections", line_label)] == 1
    assert b[("chatserver_connections", line_label)] == 1
    assert a[("chatserver_messages_received_total", line_label)] == 3
    assert b[("chatserver_messages_received_total", line_label)] == 2
    # The other node's users are not counted again, under any protocol.
    assert not [key for key in (*a, *b) if ("protocol", "cluster") in key[1]]
    # Users are the whole cluster's on each node.
    assert a[("chatserver_users", ())] == b[("chatserver_users", ())] == 2


def test_room_events_are_stored_once_by_the_users_own_node(
    make_node: Node, postgres: PostgresServer
) -> None:
    import psycopg

    dsn = postgres.new_database()
    shared = {"storage": {"backend": "postgresql", "dsn": dsn}}
    a = make_node("a", overrides=shared)
    b = make_node("b", overrides=shared)
    alice, bob = irc_alice_and_bob_in_dev(a, b)
    alice.send("TOPIC #dev :once")
    bob.expect(" TOPIC #dev :once")
    bob.send("NICK robert")
    alice.expect(" NICK robert")
    bob.send("PART #dev")
    alice.expect(" PART #dev")

    def kinds() -> list[tuple[str, str]]:
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT kind, nick FROM room_events ORDER BY seq").fetchall()
        return [(kind, nick) for kind, nick in rows]

    expected = [
        ("join", "alice"),
        ("join", "bob"),
        ("topic", "alice"),
        ("nick", "bob"),
        ("part", "robert"),
    ]
    # Each node writes on its own schedule: wait until the rows have stopped coming.
    eventually(lambda: len(kinds()) >= len(expected), 10, "the events are stored")
    settled = kinds()
    while True:
        time.sleep(2.0)
        now = kinds()
        if now == settled:
            break
        settled = now
    assert sorted(settled) == sorted(expected)


def test_accounts_made_or_deleted_by_an_operator_on_one_node_hold_on_the_other(
    make_node: Node, postgres: PostgresServer
) -> None:
    shared = {"storage": {"backend": "postgresql", "dsn": postgres.new_database()}}
    a = make_node("a", overrides=shared)
    b = make_node("b", overrides=shared)

    def account(server: ServerProcess, *args: str) -> str:
        where = ("--config", str(server.config_path), "--data-dir", str(server.data_dir))
        result = cli("account", *args, *where, stdin="zoe-secret-1\n")
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert account(a, "create", "zoe", "--password-stdin") == "created account zoe\n"
    answer = try_nick(b, "zoe")
    assert answer.startswith("!!! error:") and "registered" in answer, answer

    # Deleted on node b while she is logged in on node a: node a ends her session.
    zoe = line(a, "zed")
    zoe.send("/identify zoe zoe-secret-1")
    zoe.expect("logged in as zoe")
    eventually(lambda: "already in use" in try_nick(b, "zed"), 10, "node b knows her")
    account(b, "delete", "zoe")
    assert "Account deleted" in zoe.read_until_closed(timeout=5)[-1]
    eventually(lambda: "You are zoe" in try_nick(b, "zoe"), 10, "zoe is free on node b")
    eventually(lambda: "You are zed" in try_nick(b, "zed"), 10, "she left node b too")


def test_an_operators_console_kick_and_notice_reach_every_node(make_node: Node) -> None:
    a = make_node("a")
    b = make_node("b")
    alice, bob = alice_and_bob_in_dev(a, b)

    def admin(server: ServerProcess, *args: str) -> str:
        where = ("--config", str(server.config_path), "--data-dir", str(server.data_dir))
        result = cli("admin", *args, *where)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert admin(a, "kick", "#dev", "bob", "off", "topic") == "kicked bob\n"
    # Bob, on the other node, is told by his own node.
    assert bob.expect("kicked") == "*** test.chatserver kicked you from #dev (off topic)"
    # Both nodes agree bob is out.
    assert members(bob, "dev", 1) == "*** members of #dev (1): @alice"
    assert members(alice, "dev", 1) == "*** members of #dev (1): @alice"

    admin(a, "notice", "restarting", "soon")
    assert "restarting soon" in bob.expect("restarting soon")
    assert "restarting soon" in alice.expect("restarting soon")


def test_an_always_on_user_is_held_by_one_node_when_another_starts(
    make_node: Node, postgres: PostgresServer
) -> None:
    import psycopg

    dsn = postgres.new_database()
    shared = {"storage": {"backend": "postgresql", "dsn": dsn}}
    a = make_node("a", overrides=shared)
    alice = line(a, "alice")
    alice.send("/register alice-secret-1")
    alice.expect("alice is now registered")
    alice.send("/set always-on on")
    alice.expect("always-on")
    join(alice, "dev")
    alice.close()
    watcher_a = line(a, "watcher")
    # Kept without a connection on node a, in her room.
    assert members(watcher_a, "dev", 1) == "*** members of #dev (1): @alice"

    # Node b starts, reads the always-on accounts from the shared store, and does not hold
    # a second alice (nor a guest-renamed copy of her).
    b = make_node("b", overrides=shared)
    watcher_b = line(b, "watcher2")
    assert members(watcher_b, "dev", 1) == "*** members of #dev (1): @alice"
    time.sleep(2.0)
    for watcher in (watcher_a, watcher_b):
        assert members(watcher, "dev", 1) == "*** members of #dev (1): @alice"
    # The node that let its copy go left her stored rooms as they were.
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT rooms FROM always_on WHERE account = 'alice'").fetchall()
    assert rows == [('["dev"]',)]
    # Node a holds her; a login to her account on node b takes her over from node a, still
    # in her room.
    visitor = line(b, "visitor")
    visitor.send("/identify alice alice-secret-1")
    assert visitor.expect("logged in as alice").endswith("(with your other session)")
    assert members(watcher_a, "dev", 1) == "*** members of #dev (1): @alice"


def whois(client: LineClient, asker: str, nick: str) -> list[str]:
    """The numerics a WHOIS of ``nick`` gets, in order."""
    client.send(f"WHOIS {nick}")
    found = []
    while True:
        text = client.expect(lambda t: f" {asker} {nick} " in t)
        numeric = text.split()[1]
        if numeric == "318":
            return found
        found.append(numeric)


def opers_online(client: LineClient, asker: str) -> int:
    client.send("LUSERS")
    return int(client.expect(f" 252 {asker} ").split()[3])


def who_flags(client: LineClient, asker: str, nick: str) -> str:
    client.send(f"WHO {nick}")
    row = client.expect(f" 352 {asker} ").split()
    client.expect(f" 315 {asker} ")
    return row[8]


def test_a_server_operator_on_one_node_is_one_on_every_node(
    redis: RedisServer, tmp_path: Path
) -> None:
    cluster = {"redis": redis.url, "lease": 3.0}

    def node(name: str) -> OpsServer:
        return OpsServer(
            tmp_path / name,
            protocols=("line", "irc"),
            overrides={"cluster": {**cluster, "node": name}},
            extra=operators_toml(),
        )

    with node("a") as a, node("b") as b:
        bob = irc_tags(b, "bob")
        bob.send("CAP REQ :draft/metadata-2")
        bob.send("MODE bob +w")
        bob.expect(" MODE bob :+w")
        bob.send("JOIN #dev")
        bob.expect(" 366 bob #dev ")
        oper = irc(a, "oper")
        claimed(redis, "bob", "b")
        eventually(lambda: "already in use" in try_nick(a, "bob"), 10, "node a knows bob")
        oper.send(f"OPER admin {OPER_PASSWORD}")
        oper.expect(" 381 ")

        # Node b's users see the operator of node a as its own users do.
        eventually(lambda: "313" in whois(bob, "bob", "oper"), 10, "node b shows 313")
        assert "*" in who_flags(bob, "bob", "oper")
        bob.send("USERHOST oper")
        assert "oper*=" in bob.expect(" 302 bob ")

        # What it may do on node b's users and rooms, node b lets it do.
        oper.send("METADATA bob SET display-name :named by an operator")
        oper.expect(" 761 ")
        bob.send("METADATA bob GET display-name")
        assert bob.expect(" 761 ").endswith(":named by an operator")
        oper.send("MODE #dev +m")
        assert ":oper!" in bob.expect(" MODE #dev +m")
        oper.send("WALLOPS :to every node")
        assert bob.expect(" WALLOPS ").endswith(":to every node")

        # A node that starts later learns it too.
        with node("c") as c:
            carol = irc(c, "carol")
            eventually(lambda: "313" in whois(carol, "carol", "oper"), 10, "node c shows 313")
            assert "*" in who_flags(carol, "carol", "oper")

            # Dropped on its node: no longer an operator anywhere.
            oper.send("MODE oper -o")
            oper.expect(" MODE oper :-o")
            eventually(lambda: "313" not in whois(bob, "bob", "oper"), 10, "node b drops it")
            eventually(lambda: "313" not in whois(carol, "carol", "oper"), 10, "c drops it")
            assert "*" not in who_flags(bob, "bob", "oper")
            oper.send("OPER admin " + OPER_PASSWORD)
            oper.expect(" 381 ")
            eventually(lambda: "313" in whois(carol, "carol", "oper"), 10, "node c shows it")
            assert opers_online(carol, "carol") == 1
            oper.send("QUIT :bye")
            eventually(lambda: opers_online(carol, "carol") == 0, 10, "node c sees it quit")
            assert opers_online(bob, "bob") == 0


def metadata_value(client: LineClient, target: str, key: str) -> str:
    """``key`` of ``target`` as METADATA GET answers ("" when it is not set)."""
    client.send(f"METADATA {target} GET {key}")
    text = client.expect(lambda t: " 761 " in t or " 766 " in t or " FAIL " in t)
    return text.split(" :", 1)[1] if " 761 " in text else ""


def test_room_metadata_set_before_a_node_starts_reaches_it(make_node: Node) -> None:
    a = make_node("a")
    alice = irc_tags(a, "alice")
    alice.send("CAP REQ :draft/metadata-2")
    alice.send("JOIN #dev")
    alice.expect(" 366 alice #dev ")
    alice.send("METADATA #dev SET url :https://example.org/dev")
    alice.expect(" 761 ")
    alice.send("METADATA #dev SET avatar :https://example.org/a.png")
    alice.expect(" 761 ")
    alice.send("METADATA #dev SET avatar")
    alice.expect(" 766 ")

    b = make_node("b")
    bob = irc_tags(b, "bob")
    bob.send("CAP REQ :draft/metadata-2")
    eventually(lambda: names(bob, "bob", "dev") == ["@alice"], 10, "node b knows #dev")
    eventually(
        lambda: metadata_value(bob, "#dev", "url") == "https://example.org/dev",
        10,
        "node b has the room's metadata",
    )
    assert metadata_value(bob, "#dev", "avatar") == ""

    # Changed on the node that started later: the first node follows, and its members are told.
    bob.send("JOIN #dev")
    alice.expect(lambda text: ":bob!" in text and " JOIN #dev" in text)
    alice.send("MODE #dev +o bob")
    bob.expect(" MODE #dev +o bob")
    alice.send("METADATA * SUB url")
    alice.expect(" 770 ")
    bob.send("METADATA #dev SET url :https://example.org/new")
    bob.expect(" 761 ")
    told = alice.expect(lambda text: " METADATA #dev url " in text)
    assert told.endswith(":https://example.org/new")
    assert metadata_value(alice, "#dev", "url") == "https://example.org/new"


def test_room_metadata_set_at_once_on_two_nodes_ends_the_same_on_both(make_node: Node) -> None:
    a = make_node("a", overrides=UNTHROTTLED)
    b = make_node("b", overrides=UNTHROTTLED)
    alice = irc_tags(a, "alice")
    alice.send("CAP REQ :draft/metadata-2")
    alice.send("JOIN #dev")
    alice.expect(" 366 alice #dev ")
    bob = irc_tags(b, "bob")
    bob.send("CAP REQ :draft/metadata-2")
    eventually(lambda: names(bob, "bob", "dev") == ["@alice"], 10, "node b knows #dev")
    bob.send("JOIN #dev")
    alice.expect(lambda text: ":bob!" in text and " JOIN #dev" in text)
    alice.send("MODE #dev +o bob")
    bob.expect(" MODE #dev +o bob")
    for i in range(6):
        alice.send(f"METADATA #dev SET url :from-a-{i}")
        bob.send(f"METADATA #dev SET url :from-b-{i}")
        alice.expect(f" 761 alice #dev url * :from-a-{i}")
        bob.expect(f" 761 bob #dev url * :from-b-{i}")
        agree(
            lambda: metadata_value(alice, "#dev", "url"),
            lambda: metadata_value(bob, "#dev", "url"),
            "the room's metadata",
        )


METADATA_ROUNDS = 20


def test_a_users_metadata_set_at_once_on_two_nodes_ends_the_same_on_both(
    redis: RedisServer, tmp_path: Path
) -> None:
    """Bob (node a) and a server operator (node b) set the same key of bob's at once, again
    and again: each time both nodes end with the same value."""
    cluster = {"redis": redis.url, "lease": 3.0}

    def node(name: str) -> OpsServer:
        return OpsServer(
            tmp_path / name,
            protocols=("line", "irc"),
            overrides={"cluster": {**cluster, "node": name}, **UNTHROTTLED},
            extra=operators_toml(),
        )

    with node("a") as a, node("b") as b:
        bob = irc_tags(a, "bob")
        bob.send("CAP REQ :draft/metadata-2")
        oper = irc_tags(b, "oper")
        oper.send("CAP REQ :draft/metadata-2")
        oper.send(f"OPER admin {OPER_PASSWORD}")
        oper.expect(" 381 ")
        claimed(redis, "bob", "a")
        eventually(lambda: "already in use" in try_nick(b, "bob"), 10, "node b knows bob")
        outcomes = {"a": 0, "b": 0}
        for i in range(METADATA_ROUNDS):
            # Each node first in turn, at the same instant or a few milliseconds apart.
            said = [
                (bob, f"METADATA * SET display-name :from-a-{i}"),
                (oper, f"METADATA bob SET display-name :from-b-{i}"),
            ]
            first, second = said if i % 2 else reversed(said)
            first[0].send(first[1])
            time.sleep(0.003 * (i % 3))
            second[0].send(second[1])
            for client, _ in said:
                client.expect(lambda t, i=i: " 761 " in t and t.endswith(f"-{i}"))
            value = agree(
                lambda: metadata_value(bob, "bob", "display-name"),
                lambda: metadata_value(oper, "bob", "display-name"),
                f"bob's metadata in round {i}",
            )
            assert value in (f"from-a-{i}", f"from-b-{i}"), value
            outcomes[str(value)[5]] += 1
        print(f"a user's metadata set at once on two nodes: the last set on {outcomes}")


def create_at_once(
    alice: LineClient, bob: LineClient, room: str, alice_first: bool, *, then_modes: bool = False
) -> bool:
    """alice (node a) and bob (node b) join the fresh ``room`` at once (``then_modes``: and
    each at once changes its modes as the operator it was made); once both nodes agree, one
    of them is its only operator.  Whether both nodes made the room."""
    first, second = (alice, bob) if alice_first else (bob, alice)
    first.send(f"JOIN #{room}")
    second.send(f"JOIN #{room}")
    if then_modes:
        alice.send(f"MODE #{room} +m")
        bob.send(f"MODE #{room} +s")
    made_op = {}
    for client, nick in ((alice, "alice"), (bob, "bob")):
        shown = client.expect(f" 353 {nick} ")
        client.expect(f" 366 {nick} #{room} ")
        made_op[nick] = f"@{nick}" in shown.rsplit(":", 1)[1].split()
    found = agree(lambda: names(alice, "alice", room), lambda: names(bob, "bob", room), f"#{room}")
    assert isinstance(found, list)
    assert sorted(name.lstrip("@") for name in found) == ["alice", "bob"]
    ops = [name[1:] for name in found if name.startswith("@")]
    assert len(ops) == 1, found
    if then_modes:
        agree(lambda: modes(alice, "alice", room), lambda: modes(bob, "bob", room), "modes")
    if not all(made_op.values()):
        return False
    # The user whose node made the room later is told it lost the operator status.
    loser, lost = (bob, "bob") if ops == ["alice"] else (alice, "alice")

    def told(line: str) -> bool:
        # As ":server MODE #room -o+o lost winner".
        words = line.split()
        return words[1:3] == ["MODE", f"#{room}"] and "-o" in words[3] and lost in words

    if not any(told(line) for line in loser.seen):
        loser.expect(told)
    return True


def test_a_room_created_at_once_on_two_nodes_has_one_first_operator(make_node: Node) -> None:
    a = make_node("a", overrides=UNTHROTTLED)
    b = make_node("b", overrides=UNTHROTTLED)
    alice = irc(a, "alice")
    bob = irc(b, "bob")
    eventually(lambda: "311" in whois(alice, "alice", "bob"), 10, "node a knows bob")
    eventually(lambda: "311" in whois(bob, "bob", "alice"), 10, "node b knows alice")
    rounds = 40
    raced = sum(create_at_once(alice, bob, f"fresh{i}", i % 2 == 1) for i in range(rounds))
    # Most rounds are a real race (each node made the room before it heard of the other).
    assert raced > rounds // 2, f"{raced} of {rounds} rounds raced"
    # Each creator changes the room at once as its operator: the outcome is still one.
    raced = sum(
        create_at_once(alice, bob, f"busy{i}", i % 2 == 1, then_modes=True) for i in range(rounds)
    )
    assert raced > rounds // 2, f"{raced} of {rounds} rounds raced"


def join_as_it_closes(alice: LineClient, bob: LineClient, room: str) -> bool:
    """alice (node a) makes ``room`` and makes it invite-only as bob (node b) joins it; both
    nodes end with the same members.  Whether bob got in."""
    alice.send(f"JOIN #{room}")
    alice.expect(f" 366 alice #{room} ")
    eventually(lambda: names(bob, "bob", room) == ["@alice"], 10, f"node b knows #{room}")
    alice.send(f"MODE #{room} +i")
    bob.send(f"JOIN #{room}")
    joined = bob.expect(lambda t: f" 366 bob #{room} " in t or f" 473 bob #{room} " in t)
    found = agree(lambda: names(alice, "alice", room), lambda: names(bob, "bob", room), room)
    inside = f" 366 bob #{room} " in joined
    assert found == (["@alice", "bob"] if inside else ["@alice"])
    return inside


def test_a_join_at_once_with_a_mode_that_refuses_it_ends_the_same_on_both(
    make_node: Node,
) -> None:
    a = make_node("a", overrides=UNTHROTTLED)
    b = make_node("b", overrides=UNTHROTTLED)
    alice = irc(a, "alice")
    bob = irc(b, "bob")
    raced = sum(join_as_it_closes(alice, bob, f"closing{i}") for i in range(20))
    # Node b let the join in before it heard of the mode (its node decides), in most rounds.
    assert raced, "no join came before the mode"


def test_messages_and_the_mode_changes_behind_them_in_one_write_keep_their_order(
    make_node: Node,
) -> None:
    """An operator writes, in one go, messages, then ``+m`` and its own ``-o``, then one more
    message.  The other node applies them in that order: its member gets the messages (the
    room was not moderated yet when they were said), then the modes, and not the last
    message, which the sender's own node refused."""
    # No flood control: the whole write is handled in one go.
    a = make_node("a", overrides=UNTHROTTLED)
    b = make_node("b", overrides=UNTHROTTLED)
    alice, bob = irc_alice_and_bob_in_dev(a, b)
    lines = [f"PRIVMSG #dev :before {i}" for i in range(20)]
    lines += ["MODE #dev +m", "MODE #dev -o alice", "PRIVMSG #dev :after"]
    alice.sock.sendall("".join(f"{text}\r\n" for text in lines).encode())
    # The last message is refused where it is said: alice is neither operator nor voiced.
    assert "#dev" in alice.expect(lambda text: " 404 alice " in text)
    seen = []
    while len(seen) < 22:
        text = bob.read_line(10.0)
        if text.startswith(":alice!") and (" PRIVMSG " in text or " MODE " in text):
            seen.append(text.split(" ", 1)[1])
    assert seen == [f"PRIVMSG #dev :before {i}" for i in range(20)] + [
        "MODE #dev +m",
        "MODE #dev -o alice",
    ]
    with pytest.raises(TimeoutError):
        while True:
            assert "after" not in bob.read_line(1.0)
