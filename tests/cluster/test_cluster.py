"""Two real chatserver processes sharing users and rooms through a private Redis."""

from __future__ import annotations

import os
import signal
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.matrix.clients import XmppPeer, local
from tests.ops.helpers import OPER_PASSWORD, OpsServer, operators_toml
from tests.support.redis import RedisServer
from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(90)

Node = Callable[..., ServerProcess]


def line(server: ServerProcess, nick: str) -> LineClient:
    client = LineClient(server.ports["line"])
    client.expect("*** Choose a nick:")
    client.send(nick)
    client.expect(f"*** You are {nick}.")
    return client


def irc(server: ServerProcess, nick: str) -> LineClient:
    client = LineClient(server.ports["irc"])
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick}")
    client.expect(lambda text: f" 001 {nick} " in text)
    return client


def join(client: LineClient, room: str) -> None:
    client.send(f"/join {room}")
    client.expect(f"*** now talking in #{room}")


def eventually(test: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


def members(client: LineClient, room: str, count: int) -> str:
    """Ask (a line-chat client) until ``room`` has ``count`` members: what others do reaches
    this node through Redis, a moment after it is done on theirs."""
    found = ""

    def ask() -> bool:
        nonlocal found
        client.send(f"/who {room}")
        found = client.expect(lambda text: "members of" in text or "no such room" in text)
        return f"({count})" in found

    eventually(ask, 10, f"{count} members in #{room}")
    return found


def alice_and_bob_in_dev(a: ServerProcess, b: ServerProcess) -> tuple[LineClient, LineClient]:
    """Line-chat users alice on ``a`` and bob on ``b``, both in #dev, each seeing the other."""
    alice = line(a, "alice")
    join(alice, "dev")
    bob = line(b, "bob")
    members(bob, "dev", 1)
    join(bob, "dev")
    alice.expect("-!- bob joined #dev")
    return alice, bob


def claimed(redis: RedisServer, nick: str, node: str) -> None:
    """Wait until Redis holds ``node``'s claim of ``nick``.  A node takes a nick at once and
    claims it in Redis a moment later: another node asked for the nick before that may win
    the claim, and the first node's user is renamed (as it must be: one owner per nick)."""
    eventually(
        lambda: redis.command("GET", f"chatserver:nick:{nick}") == node,
        10,
        f"node {node}'s claim of {nick}",
    )


def try_nick(server: ServerProcess, nick: str) -> str:
    """A line-chat connection asks for ``nick``; the server's answer (the client closes)."""
    client = LineClient(server.ports["line"])
    try:
        client.expect("*** Choose a nick:")
        client.send(nick)
        return client.read_line()
    finally:
        client.close()


def replayed_on_join(server: ServerProcess, nick: str, room: str) -> tuple[list[str], list[str]]:
    """A line-chat user joins ``room``: the room's recent history it is shown, and all it
    is shown."""
    client = line(server, nick)
    client.send(f"/join {room}")
    shown = [client.read_line(5.0)]
    while f"now talking in #{room}" not in shown[-1]:
        shown.append(client.read_line(5.0))
    return [text for text in shown if text.startswith(f"[#{room}] [")], shown


def sender_and_receiver_in_big(a: ServerProcess, b: ServerProcess) -> tuple[LineClient, LineClient]:
    """IRC users sender (on ``a``) and receiver (on ``b``) in #big, each seeing the other."""
    sender = irc(a, "sender")
    sender.send("JOIN #big")
    sender.expect(" 366 sender #big ")
    receiver = irc(b, "receiver")
    receiver.send("JOIN #big")
    receiver.expect(" 366 receiver #big ")
    sender.expect(lambda text: text.startswith(":receiver!") and " JOIN " in text)
    return sender, receiver


def muc_body(el: ET.Element) -> str | None:
    if local(el) != "message" or el.get("type") != "groupchat":
        return None
    body = el.find("{jabber:client}body")
    return None if body is None else body.text


def test_users_on_two_nodes_share_a_room_and_private_messages(make_node: Node) -> None:
    a = make_node("a", protocols=("line", "irc"))
    b = make_node("b", protocols=("line", "xmpp"))
    alice = irc(a, "alice")
    bob = line(b, "bob")
    carol = XmppPeer(b.ports["xmpp"], "carol", "carol-secret-1", register=True)

    alice.send("JOIN #dev")
    alice.expect(" 366 alice #dev ")
    # Bob, on the other node, sees Alice in the room, as its operator.
    assert members(bob, "dev", 1) == "*** members of #dev (1): @alice"
    join(bob, "dev")
    alice.expect(lambda text: text.startswith(":bob!") and " JOIN #dev" in text)
    carol.join("dev")
    carol.expect(lambda el: local(el) == "presence" and el.get("from", "").endswith("/carol"))
    alice.expect(lambda text: text.startswith(":carol!") and " JOIN #dev" in text)
    bob.expect("-!- carol joined #dev")

    alice.send("PRIVMSG #dev :hello from irc on a")
    assert bob.expect("hello from irc") == "[#dev] <alice> hello from irc on a"
    carol.expect(lambda el: muc_body(el) == "hello from irc on a")
    bob.send("hi from line on b")
    assert alice.expect("hi from line").endswith(" PRIVMSG #dev :hi from line on b")
    carol.say("dev", "hi from xmpp on b")
    assert alice.expect("hi from xmpp").startswith(":carol!")

    # Private messages cross nodes both ways.
    bob.send("/msg alice psst")
    assert alice.expect("psst").endswith(" PRIVMSG alice :psst")
    alice.send("PRIVMSG bob :back at you")
    assert bob.expect("back at you") == "*alice* back at you"

    # Each node's NAMES is the whole room.
    alice.send("NAMES #dev")
    names = alice.expect(" 353 ")
    assert sorted(names.rsplit(":", 1)[1].split()) == ["@alice", "bob", "carol"]

    # A nick is one across the cluster.
    assert "already in use" in try_nick(a, "bob")
    assert "already in use" in try_nick(b, "alice")
    alice.send("NICK carol")
    alice.expect(" 433 alice carol ")

    # A rename and a part are seen on the other node.
    alice.send("NICK alicia")
    bob.expect("alice is now known as alicia")
    bob.send("/part dev")
    alice.expect(lambda text: text.startswith(":bob!") and " PART #dev" in text)
    carol.close()


def test_a_node_reaches_redis_through_its_unix_socket(make_node: Node, redis: RedisServer) -> None:
    # a on TCP, b on the Unix socket of the same Redis: one cluster.
    a = make_node("a", protocols=("line", "irc"))
    b = make_node("b", protocols=("line", "irc"), overrides={"cluster": {"redis": redis.unix_url}})
    # Both of b's connections (commands, and its stream's reads) are on the socket.
    eventually(
        lambda: redis.command("CLIENT", "LIST").count(f" addr={redis.socket}:") == 2,
        10,
        "b's two connections on the socket",
    )
    alice, bob = alice_and_bob_in_dev(a, b)
    alice.send("over tcp")
    assert bob.expect("over tcp") == "[#dev] <alice> over tcp"
    bob.send("over the socket")
    assert alice.expect("over the socket") == "[#dev] <bob> over the socket"
    bob.send("/msg alice psst")
    assert alice.expect("psst") == "*bob* psst"
    # Nick claims go through it too: one owner per nick.
    claimed(redis, "bob", "b")
    assert "already in use" in try_nick(a, "bob")
    assert "already in use" in try_nick(b, "alice")


def test_a_killed_nodes_users_leave_and_its_nicks_free_within_the_lease(make_node: Node) -> None:
    a = make_node("a", lease=2.0)
    b = make_node("b", lease=2.0)
    alice = line(a, "alice")
    join(alice, "dev")
    bob = line(b, "bob")
    members(bob, "dev", 1)
    join(bob, "dev")
    assert "already in use" in try_nick(b, "alice")

    killed_at = time.monotonic()
    a.kill()
    bob.expect("-!- alice quit (a lost)", timeout=10)
    # Heartbeats a third of the lease apart, and one lease after: well within three leases.
    assert time.monotonic() - killed_at < 6.0
    # Alice comes back through the other node and takes her nick back.
    alice = line(b, "alice")
    join(alice, "dev")
    bob.expect("-!- alice joined #dev")


def test_a_node_stopped_cleanly_tells_the_others_at_once(make_node: Node) -> None:
    a = make_node("a", lease=30.0)
    b = make_node("b", lease=30.0)
    alice = line(a, "alice")
    join(alice, "dev")
    bob = line(b, "bob")
    members(bob, "dev", 1)
    join(bob, "dev")
    assert a.stop() == 0
    # Long before the lease: the node said goodbye.
    bob.expect("-!- alice quit (a stopped)", timeout=5)
    alice = line(b, "alice")


def test_redis_away_refuses_new_nicks_and_joins_local_chat_goes_on(
    make_node: Node, redis: RedisServer
) -> None:
    a = make_node("a")
    b = make_node("b")
    alice = line(a, "alice")
    dave = line(a, "dave")
    bob = line(b, "bob")
    join(alice, "dev")
    members(bob, "dev", 1)
    join(dave, "dev")
    join(bob, "dev")
    members(alice, "dev", 3)

    redis.kill()
    eventually(lambda: "Redis" in try_nick(a, "erin"), 10, "node a refuses new nicks")
    answer = try_nick(b, "erin")
    assert answer.startswith("!!! error:") and "Redis is unreachable" in answer, answer
    alice.send("/join other")
    assert "Redis is unreachable" in alice.expect("!!!")
    carl = LineClient(a.ports["irc"])
    carl.send("NICK carl")
    carl.send("USER carl 0 * :carl")
    assert "Redis is unreachable" in carl.expect(" 400 ")
    carl.close()
    # Users already in a room on the same node go on talking.
    alice.send("said while redis was away")
    assert dave.expect("while redis") == "[#dev] <alice> said while redis was away"

    redis.start()
    # Back: joins and new nicks work again, and what was said meanwhile reaches the other node.
    assert bob.expect("while redis", timeout=15) == "[#dev] <alice> said while redis was away"
    eventually(lambda: "You are erin" in try_nick(b, "erin"), 15, "node b takes new nicks again")
    join(alice, "other")
    bob.send("after the outage")
    assert alice.expect("after the outage") == "[#dev] <bob> after the outage"
    assert "already in use" in try_nick(b, "alice")
    # Both nodes still see one room of three.
    bob.send("/who dev")
    assert bob.expect("members of #dev") == "*** members of #dev (3): @alice bob dave"


def test_nothing_acknowledged_is_lost_and_no_nick_is_owned_twice(
    make_node: Node, redis: RedisServer
) -> None:
    """Four users on two nodes talk while Redis goes away and comes back."""
    a = make_node("a")
    b = make_node("b")
    users = {"u1": line(a, "u1"), "u2": line(a, "u2"), "u3": line(b, "u3"), "u4": line(b, "u4")}
    join(users["u1"], "chaos")
    members(users["u3"], "chaos", 1)
    for nick in ("u2", "u3", "u4"):
        join(users[nick], "chaos")
    members(users["u1"], "chaos", 4)
    members(users["u3"], "chaos", 4)

    count = 30
    sent: dict[str, list[str]] = {nick: [] for nick in users}
    for i in range(count):
        if i == 10:
            redis.kill()
        if i == 20:
            redis.start()
        for nick, client in users.items():
            text = f"{nick}-{i}"
            client.send(text)
            sent[nick].append(text)
        time.sleep(0.1)

    for nick, client in users.items():
        expected = {text for other, texts in sent.items() if other != nick for text in texts}
        got: list[str] = []
        deadline = time.monotonic() + 30
        while len(got) < len(expected) and time.monotonic() < deadline:
            try:
                text = client.read_line(1.0)
            except TimeoutError:
                continue
            if text.startswith("[#chaos] <"):
                got.append(text.split("> ", 1)[1])
        assert sorted(got) == sorted(expected), f"{nick}: missing {expected - set(got)}"
        # Each sender's messages came in the order sent.
        for other in sent:
            if other != nick:
                theirs = [text for text in got if text.startswith(f"{other}-")]
                assert theirs == sent[other]

    # Redis names one node per nick, the node each user is on.
    for nick, node in (("u1", "a"), ("u2", "a"), ("u3", "b"), ("u4", "b")):
        assert redis.command("GET", f"chatserver:nick:{nick}") == node
    for server in (a, b):
        assert "already in use" in try_nick(server, "u1")
        assert "already in use" in try_nick(server, "u3")


def test_room_messages_go_only_to_nodes_with_members_there(
    make_node: Node, redis: RedisServer
) -> None:
    a = make_node("a")
    b = make_node("b")
    c = make_node("c")
    alice = line(a, "alice")
    join(alice, "dev")
    bob = line(b, "bob")
    members(bob, "dev", 1)
    join(bob, "dev")
    carol = line(c, "carol")
    # Carol's node knows the room and its members without being in it.
    assert members(carol, "dev", 2) == "*** members of #dev (2): @alice bob"

    def entries(node: str) -> int:
        return int(redis.command("XLEN", f"chatserver:events:{node}").lstrip(":"))

    before = entries("c")
    for i in range(5):
        alice.send(f"to the room {i}")
    bob.expect("to the room 4")
    alice.send("/msg bob just us")
    bob.expect("just us")
    assert entries("c") == before
    # Once Carol is in the room, her node gets its messages.
    join(carol, "dev")
    alice.expect("-!- carol joined #dev")
    alice.send("now for carol too")
    assert carol.expect("now for carol") == "[#dev] <alice> now for carol too"
    assert entries("c") > before


def test_what_is_said_within_the_publish_interval_waits_and_goes_in_one_entry(
    make_node: Node, redis: RedisServer
) -> None:
    """The first message after a quiet spell goes to the other node at once; what is said
    in later reactor turns before ``publish_interval`` has passed waits for it and goes in
    one stream entry, in order."""
    interval = 0.8
    gather = {"cluster": {"publish_interval": interval}}
    a = make_node("a", overrides=gather)
    b = make_node("b", overrides=gather)
    alice, bob = alice_and_bob_in_dev(a, b)
    # Quiet for longer than the interval: node a's next publish goes at once.
    time.sleep(interval + 0.2)

    def entries() -> int:
        return int(redis.command("XLEN", "chatserver:events:b").lstrip(":"))

    before = entries()
    started = time.monotonic()
    alice.send("first")
    bob.expect("first")
    first_took = time.monotonic() - started
    # Three lines in three reactor turns, well within the interval.
    for i in range(3):
        alice.send(f"gathered {i}")
        time.sleep(0.05)
    got = [bob.expect(lambda text: "gathered" in text) for _ in range(3)]
    took = time.monotonic() - started
    assert [text.rsplit(" ", 1)[1] for text in got] == ["0", "1", "2"]
    assert first_took < interval / 2
    # The second publish is an interval after the first, which went after "first" was sent.
    assert took >= interval
    assert entries() - before == 2


def test_an_operator_on_one_node_kills_a_user_of_another(
    redis: RedisServer, tmp_path: Path
) -> None:
    cluster = {"redis": redis.url, "lease": 3.0}
    a = OpsServer(
        tmp_path / "a", protocols=("line", "irc"), overrides={"cluster": {**cluster, "node": "a"}}
    )
    b = OpsServer(
        tmp_path / "b",
        protocols=("line", "irc"),
        overrides={"cluster": {**cluster, "node": "b"}},
        extra=operators_toml(),
    )
    with a, b:
        alice = irc(a, "alice")
        alice.send("JOIN #dev")
        alice.expect(" 366 alice #dev ")
        oper = irc(b, "oper")
        members(line(b, "watcher"), "dev", 1)
        oper.send("JOIN #dev")
        oper.expect(" 366 oper #dev ")
        oper.send(f"OPER admin {OPER_PASSWORD}")
        oper.expect(" 381 ")
        oper.send("KILL alice :spamming")
        # Her own node ends her connection, with the reason.
        assert "spamming" in alice.expect("ERROR")
        alice.read_until_closed()
        oper.expect(lambda text: text.startswith(":alice!") and " QUIT " in text)
        # And her nick is free again on either node.
        eventually(lambda: "You are alice" in try_nick(b, "alice"), 10, "alice is free")


def test_a_burst_reaches_the_other_nodes_whole_and_in_order_in_few_entries(
    make_server: Callable[..., ServerProcess], redis: RedisServer
) -> None:
    """One IRC write of 1,200 messages to two rooms whose members are on different sets of
    nodes: every receiver gets its room's messages once and in order, and a node's stream
    holds far fewer entries than messages (a turn's ops share entries)."""

    def node(name: str) -> ServerProcess:
        return make_server(
            protocols=("irc",),
            overrides={
                "cluster": {"redis": redis.url, "node": name},
                "irc": {"flood_burst": 0},
            },
        )

    a, b, c = node("a"), node("b"), node("c")

    def joined(server: ServerProcess, nick: str, rooms: list[str]) -> LineClient:
        client = irc(server, nick)
        for room in rooms:
            client.send(f"JOIN #{room}")
            client.expect(lambda text, room=room: f" 366 {nick} #{room} " in text)
        return client

    sender = joined(a, "sender", ["one", "two"])
    on_b = joined(b, "onb", ["one", "two"])
    on_c = joined(c, "onc", ["two"])

    def onc_known_on_a() -> bool:
        sender.send("NAMES #two")
        return "onc" in sender.expect(lambda text: " 353 " in text and " #two " in text)

    eventually(onc_known_on_a, 10, "onc in #two on node a")

    def streamed(name: str) -> int:
        return int(redis.command("XLEN", f"chatserver:events:{name}").lstrip(":"))

    before = streamed("b")
    count = 1200
    # #one goes to node b, #two to b and c: the sender's turn alternates between them.
    lines = [f"PRIVMSG #{'one' if i % 3 else 'two'} :burst {i}\r\n" for i in range(count)]
    sender.sock.sendall("".join(lines).encode())

    def collect(client: LineClient, expected: int) -> dict[str, list[str]]:
        """Each room's messages, in the order received (a turn's messages are delivered
        room by room: the order is each room's)."""
        got: dict[str, list[str]] = {"#one": [], "#two": []}
        deadline = time.monotonic() + 60
        while sum(map(len, got.values())) < expected and time.monotonic() < deadline:
            try:
                text = client.read_line(1.0)
            except TimeoutError:
                continue
            if " PRIVMSG #" in text:
                got[text.split(" ")[2]].append(text.split(" :", 1)[1])
        return got

    to_one = [f"burst {i}" for i in range(count) if i % 3]
    to_two = [f"burst {i}" for i in range(count) if i % 3 == 0]
    assert collect(on_b, count) == {"#one": to_one, "#two": to_two}
    assert collect(on_c, len(to_two)) == {"#one": [], "#two": to_two}
    # Nothing more arrives: no repeats.
    with pytest.raises(TimeoutError):
        on_c.read_line(1.0)
    assert streamed("b") - before < count // 10


def test_a_nodes_stream_keeps_about_stream_bytes_however_much_goes_through(
    make_server: Callable[..., ServerProcess], redis: RedisServer
) -> None:
    """Bursts of 15,000 room messages to another node: they all arrive, in order, and its
    stream in Redis holds about ``[cluster] stream_bytes`` of them (1 MiB here), not all
    of them (a stream bounded by its count of entries only kept every turn's entry)."""
    budget = 1 << 20

    def node(name: str) -> ServerProcess:
        return make_server(
            protocols=("irc",),
            overrides={
                "cluster": {"redis": redis.url, "node": name, "stream_bytes": budget},
                "irc": {"flood_burst": 0},
            },
        )

    a, b = node("a"), node("b")
    sender, receiver = sender_and_receiver_in_big(a, b)

    def stream_memory() -> int:
        return int(redis.command("MEMORY", "USAGE", "chatserver:events:b", "SAMPLES", "0")[1:])

    count = 15_000
    padding = "x" * 250
    sent = 0
    got: list[int] = []
    for burst in range(5):
        # A burst per write, read back before the next: each turn's entry is a few hundred
        # messages, and the stream is trimmed as the later ones come.
        upto = count * (burst + 1) // 5
        sender.sock.sendall(
            "".join(f"PRIVMSG #big :{i} {padding}\r\n" for i in range(sent, upto)).encode()
        )
        sent = upto
        deadline = time.monotonic() + 60
        while len(got) < sent and time.monotonic() < deadline:
            try:
                text = receiver.read_line(1.0)
            except TimeoutError:
                continue
            if " PRIVMSG #big :" in text:
                got.append(int(text.split(" :", 1)[1].split(" ", 1)[0]))
    assert got == list(range(count))
    # 15,000 messages of 260 characters went through (4.8 MB of the stream's memory when
    # it kept them all); it keeps about the budget (Redis trims whole entries, and keeps a
    # little more than asked), and at least the last few entries.
    used = stream_memory()
    assert 0 < used < 2 * budget, used


def test_a_node_stalled_while_its_stream_was_trimmed_past_it_asks_for_every_nodes_state(
    make_node: Node, redis: RedisServer
) -> None:
    """Node b is paused while node a writes more than b's stream keeps: once b runs again
    it finds that entries were trimmed before it read them (it would otherwise read on past
    the gap, its picture of a's users missing whatever joins and quits were in it), says
    so, asks every node for its state, and learns of a user of a who came meanwhile."""
    small = {"cluster": {"stream_bytes": 1 << 16}, "irc": {"flood_burst": 0}}
    a = make_node("a", lease=10.0, protocols=("irc",), overrides=small)
    b = make_node("b", lease=10.0, protocols=("irc",), overrides=small)
    sender, receiver = sender_and_receiver_in_big(a, b)
    assert b.proc is not None
    os.kill(b.proc.pid, signal.SIGSTOP)
    try:
        padding = "x" * 250
        # A user who comes while b is away: its entry is among those trimmed.
        late = irc(a, "late")
        late.send("JOIN #big")
        late.expect(" 366 late #big ")
        for burst in range(8):
            # Each burst its own entry of about 27 kB: the stream keeps the last few.
            sender.sock.sendall(
                "".join(f"PRIVMSG #big :{burst}.{i} {padding}\r\n" for i in range(100)).encode()
            )
            time.sleep(0.2)
        length = int(redis.command("XLEN", "chatserver:events:b").lstrip(":"))
        assert length < 8
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)
    eventually(lambda: "entries were missed" in b.log(), 10, "b finds the gap")
    # The last burst reaches b's member, and b knows the late user from a's state.
    receiver.expect(lambda text: " PRIVMSG #big :7.99 " in text, timeout=10)

    def late_known_on_b() -> bool:
        receiver.send("NAMES #big")
        return "late" in receiver.expect(lambda text: " 353 " in text)

    eventually(late_known_on_b, 10, "late in #big on node b")


def test_an_idle_node_checks_its_stream_only_after_reading_from_it(
    make_node: Node, redis: RedisServer
) -> None:
    """The check for entries trimmed unread follows reads that found some: while nothing
    comes, a node's reader only waits on Redis (a check a second per node was most of what
    an idle cluster did); once an entry comes, the node checks again."""
    a = make_node("a", protocols=("irc",))
    b = make_node("b", protocols=("irc",))
    sender, receiver = sender_and_receiver_in_big(a, b)

    def checks() -> int:
        for row in redis.command("INFO", "commandstats").splitlines():
            if row.startswith("cmdstat_xinfo|stream:"):
                return int(row.split("calls=", 1)[1].split(",", 1)[0])
        return 0

    # The joins were read (and checked after, within a read's wait of a second or two);
    # then nothing comes.
    time.sleep(3.5)
    before = checks()
    time.sleep(3.0)
    assert checks() == before
    sender.send("PRIVMSG #big :wake up")
    receiver.expect(" PRIVMSG #big :wake up")
    eventually(lambda: checks() > before, 5, "b checks its stream after reading from it")


def test_several_senders_bursts_reach_another_node_each_in_order_and_kind(
    make_server: Callable[..., ServerProcess], redis: RedisServer
) -> None:
    """Two IRC users of one node each write a burst to a room: messages, notices, actions,
    and messages to the room's operators between them.  On the other node each sender's
    lines arrive once, in order, each as it was sent, and the room's recent history there
    (what a line-chat member sees on joining) ends with the last of them."""

    def node(name: str) -> ServerProcess:
        return make_server(
            protocols=("irc", "line"),
            overrides={"cluster": {"redis": redis.url, "node": name}, "irc": {"flood_burst": 0}},
        )

    a, b = node("a"), node("b")
    # First in the room: its operator, so it gets the messages to @#room too.
    receiver = irc(b, "receiver")
    receiver.send("JOIN #room")
    receiver.expect(lambda text: " 366 receiver #room " in text)
    senders = {}
    for nick in ("s1", "s2"):
        senders[nick] = irc(a, nick)
        senders[nick].send("JOIN #room")
        senders[nick].expect(lambda text, nick=nick: f" 366 {nick} #room " in text)
        receiver.expect(lambda text, nick=nick: text.startswith(f":{nick}!") and " JOIN " in text)

    count = 400

    def burst(nick: str) -> list[tuple[str, str, str]]:
        """(command, target, text) of each line, in order."""
        out = []
        for i in range(count):
            if i % 50 == 7:
                out.append(("PRIVMSG", "@#room", f"{nick} to ops {i}"))
            elif i % 5 == 0:
                out.append(("NOTICE", "#room", f"{nick} notice {i}"))
            elif i % 7 == 0:
                out.append(("PRIVMSG", "#room", f"\x01ACTION {nick} acts {i}\x01"))
            else:
                out.append(("PRIVMSG", "#room", f"{nick} says {i}"))
        return out

    sent = {nick: burst(nick) for nick in senders}
    for nick, client in senders.items():
        client.sock.sendall(
            "".join(f"{cmd} {target} :{text}\r\n" for cmd, target, text in sent[nick]).encode()
        )
    got: dict[str, list[tuple[str, str, str]]] = {nick: [] for nick in senders}
    order: list[str] = []
    deadline = time.monotonic() + 60
    while sum(map(len, got.values())) < 2 * count and time.monotonic() < deadline:
        try:
            text = receiver.read_line(1.0)
        except TimeoutError:
            continue
        source, _, rest = text.partition(" ")
        cmd, target, body = rest.split(" ", 2)
        nick = source[1:].split("!")[0]
        if cmd in ("PRIVMSG", "NOTICE") and nick in got:
            got[nick].append((cmd, target, body[1:]))
            if target == "#room":
                order.append(body[1:])
    assert got == sent
    with pytest.raises(TimeoutError):
        receiver.read_line(1.0)
    # The room's recent history on node b holds what node b's members got, in their order.
    replayed, shown = replayed_on_join(b, "late", "room")
    assert len(replayed) == 10, shown
    last = order[-1].strip("\x01").removeprefix("ACTION ")
    assert replayed[-1].endswith(last), shown
