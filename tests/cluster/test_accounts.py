"""One account, one node, through two real nodes and a private Redis: logins to one account at
the same instant on two nodes (exactly one node gets the account, on IRC, XMPP and line chat;
the other login is handed to it, or refused), an account's
lease after its node dies, with Redis unreachable or emptied, and an always-on user handed
over to the node its owner logs in on, without a word to its rooms."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.cluster.test_cluster import eventually, irc, join, line
from tests.hostile.clients import Closed, XmppClient, local
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer
from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(180)

Node = Callable[..., ServerProcess]

PROTOCOLS = ("line", "irc", "xmpp")
PASSWORD = "racer-secret-1"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
HISTORY_CAPS = ("batch", "server-time", "message-tags")
# Simultaneous logins: each pair of protocols (node a's, node b's), each twice, each node
# sending first in turn.
ROUNDS = 18
KINDS = ("irc", "xmpp", "line")
# Kinds whose login before registration, to an account held on another node, is handed off
# to that node (protocols.transport.handoff) rather than refused.
HANDED_OFF = frozenset({"irc", "line", "xmpp"})


def shared(postgres: PostgresServer) -> dict[str, dict[str, Any]]:
    return {
        "storage": {"backend": "postgresql", "dsn": postgres.new_database()},
        "chat": {"address_limit_exempt": ["127.0.0.0/8"], "login_failure_burst": 1000},
        "irc": {"flood_exempt": ["127.0.0.0/8"]},
    }


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def lease_of(redis: RedisServer, account: str) -> str:
    """The node holding ``account``'s lease ('$-1': none)."""
    return redis.command("GET", f"chatserver:account:{account}")


def register(node: ServerProcess, account: str, *, always_on: bool = False) -> LineClient:
    client = line(node, account)
    client.send(f"/register {PASSWORD}")
    client.expect(f"{account} is now registered")
    if always_on:
        client.send("/set always-on on")
        client.expect("always-on")
    return client


def irc_sasl(node: ServerProcess, nick: str, caps: tuple[str, ...] = ()) -> LineClient:
    """An IRC connection in registration, its SASL PLAIN exchange waiting for the response."""
    client = LineClient(node.ports["irc"])
    client.send("CAP LS 302")
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick}")
    client.send("CAP REQ :" + " ".join(("sasl", *caps)))
    client.expect(" ACK ")
    client.send("AUTHENTICATE PLAIN")
    client.expect("AUTHENTICATE +")
    return client


def late_sasl(node: ServerProcess, nick: str) -> LineClient:
    """An IRC connection registered as ``nick``, then in a SASL PLAIN exchange: a login after
    registration, which stays on its node (one during registration may be handed off)."""
    client = irc(node, nick)
    client.send("CAP REQ :sasl")
    client.expect(" ACK ")
    client.send("AUTHENTICATE PLAIN")
    client.expect("AUTHENTICATE +")
    return client


def sasl_line(account: str) -> str:
    return "AUTHENTICATE " + b64(f"{account}\0{account}\0{PASSWORD}")


def sasl_outcome(client: LineClient) -> str:
    return client.expect(lambda t: " 903 " in t or " 904 " in t)


class Contender:
    """A client of ``kind`` on ``node``, ready to send the last line of a login to
    ``account``; ``fire`` sends it, ``outcome`` reads (won, what the server said)."""

    def __init__(self, node: ServerProcess, kind: str, account: str, n: int) -> None:
        self.node, self.kind, self.account = node, kind, account
        self.xmpp: XmppClient | None = None
        self.client: LineClient | None = None
        if kind == "irc":
            self.client = irc_sasl(node, f"i{n}x")
        elif kind == "line":
            self.client = LineClient(node.ports["line"])
            self.client.expect("*** Choose a nick:")
        else:
            self.xmpp = XmppClient(node.ports["xmpp"], source="127.0.0.1")

    def fire(self) -> None:
        if self.kind == "irc":
            assert self.client is not None
            self.client.send(sasl_line(self.account))
        elif self.kind == "line":
            assert self.client is not None
            self.client.send(f"/identify {self.account} {PASSWORD}")
        else:
            assert self.xmpp is not None
            token = b64(f"\0{self.account}\0{PASSWORD}")
            self.xmpp.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")

    def outcome(self) -> tuple[bool, str]:
        if self.kind == "irc":
            assert self.client is not None
            text = sasl_outcome(self.client)
            if " 903 " not in text:
                return False, text
            # Registration ends, as a client does once SASL is done.
            self.client.send("CAP END")
            self.client.expect(" 001 ")
            return True, text
        if self.kind == "line":
            assert self.client is not None
            text = self.client.expect(
                lambda t: t.startswith("!!!") or f"logged in as {self.account}" in t
            )
            return not text.startswith("!!!"), text
        assert self.xmpp is not None
        try:
            el = self.xmpp.expect(lambda el: local(el) in ("success", "failure"))
        except Closed:
            return False, f"stream error {self.xmpp.stream_error}"
        if local(el) != "success":
            return False, f"failure {[local(c) for c in el]}"
        self.xmpp.open()
        self.xmpp.send(f"<iq type='set' id='b'><bind xmlns='{NS_BIND}'/></iq>")
        self.xmpp.expect(lambda el: el.get("id") == "b")
        return True, "success"

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.xmpp is not None:
            self.xmpp.close()


def whois_gone(client: LineClient, nick: str) -> bool:
    client.send(f"WHOIS {nick}")
    return " 401 " in client.expect(lambda t: " 401 " in t or " 311 " in t)


def test_logins_to_one_account_at_the_same_instant_on_two_nodes_give_it_to_exactly_one(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    config = shared(postgres)
    a = make_node("a", protocols=PROTOCOLS, overrides=config)
    b = make_node("b", protocols=PROTOCOLS, overrides=config)
    register(a, "racer").close()
    watchers = {"a": irc(a, "watcha"), "b": irc(b, "watchb")}
    for watcher in watchers.values():
        eventually(lambda w=watcher: whois_gone(w, "racer"), 10, "racer gone")
    wins = {"a": 0, "b": 0}
    for n in range(ROUNDS):
        kinds = (KINDS[n % 3], KINDS[(n // 3) % 3])
        contenders = {
            "a": Contender(a, kinds[0], "racer", n),
            "b": Contender(b, kinds[1], "racer", n),
        }
        order = ("a", "b") if n % 2 == 0 else ("b", "a")
        for name in order:
            contenders[name].fire()
        results = {name: contenders[name].outcome() for name in order}
        # The node holding the lease won; the other login either was handed to it (served
        # there, through the node it reached) or was refused.
        winner = lease_of(redis, "racer")
        assert winner in ("a", "b"), (n, winner)
        loser = "b" if winner == "a" else "a"
        assert results[winner][0], (n, kinds, results)
        wins[winner] += 1
        won, refusal = results[loser]
        loser_kind = kinds[0 if loser == "a" else 1]
        if loser_kind in HANDED_OFF:
            assert won, (n, kinds, results)
        elif loser_kind != "xmpp":
            assert not won, (n, kinds, results)
            # The refusal says where the account is.
            assert "another server" in refusal and f"({winner})" in refusal, (n, refusal)
        else:
            assert refusal == "stream error conflict", (n, refusal)
        for contender in contenders.values():
            contender.close()
        # The winner's session ended: its lease goes, and both nodes forget the user.
        eventually(lambda: lease_of(redis, "racer") == "$-1", 10, f"round {n}: lease given up")
        for watcher in watchers.values():
            eventually(lambda w=watcher: whois_gone(w, "racer"), 10, f"round {n}: racer gone")
    # Both nodes won some rounds: the claims really raced.
    print(f"wins per node over {ROUNDS} rounds: {wins}")
    assert sum(wins.values()) == ROUNDS


def nick_taken_after(node: ServerProcess, nick: str, since: float, timeout: float) -> float:
    """Seconds from ``since`` until ``node`` gives ``nick`` to a new IRC connection."""
    deadline = time.monotonic() + timeout
    while True:
        client = LineClient(node.ports["irc"])
        client.send(f"NICK {nick}")
        client.send(f"USER {nick} 0 * :{nick}")
        text = client.expect(lambda t: f" 001 {nick} " in t or " 433 " in t)
        if " 001 " in text:
            return time.monotonic() - since
        client.close()
        assert time.monotonic() < deadline, f"{nick} not given within {timeout} s"
        time.sleep(0.05)


def test_a_dead_nodes_account_and_nicks_are_free_within_a_lease_and_its_always_on_user_comes_back(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    lease = 2.0
    config = shared(postgres)
    a = make_node("a", protocols=PROTOCOLS, lease=lease, overrides=config)
    b = make_node("b", protocols=PROTOCOLS, lease=lease, overrides=config)
    erin = register(a, "erin", always_on=True)
    join(erin, "dev")
    gus = irc(a, "gus")
    watcher = irc(b, "watcher")
    watcher.send("JOIN #dev")
    watcher.expect(" 366 watcher #dev ")
    assert lease_of(redis, "erin") == "a"
    eventually(lambda: not whois_gone(watcher, "gus"), 10, "gus seen on b")
    # While node a lives and she is connected there, a login to the account after
    # registration on node b is handed to node a: another connection of hers, there.
    visitor = late_sasl(b, "visitor")
    visitor.send(sasl_line("erin"))
    text = sasl_outcome(visitor)
    assert " 903 erin " in text, text
    assert lease_of(redis, "erin") == "a"
    visitor.close()
    erin.close()
    eventually(lambda: is_away(watcher, "erin"), 10, "erin kept away on a")
    watcher.send("PRIVMSG #dev :said before the crash")

    a.kill()
    killed = time.monotonic()
    # Gus's nick asked for on node b again and again meanwhile.
    nick_wait: list[float] = []
    asking = threading.Thread(
        target=lambda: nick_wait.append(nick_taken_after(b, "gus", killed, 4 * lease + 5))
    )
    asking.start()
    # The first login on node b after the kill waits for node a's answer, which never
    # comes; node b counts node a lost within a lease of its death (its key lapses at most a
    # lease after its last heartbeat), the claim goes to b, which puts her always-on user
    # back from the store, as a restart of her node would.
    client = irc_sasl(b, "erinb", HISTORY_CAPS)
    client.send(sasl_line("erin"))
    text = client.expect(lambda t: " 903 " in t or " 904 " in t, timeout=4 * lease + 5)
    took = time.monotonic() - killed
    assert " 903 " in text, text
    asking.join()
    assert nick_wait, "gus's nick was never given"
    print(
        f"after node a was killed (lease {lease:g} s): login {took:.2f} s, nick {nick_wait[0]:.2f} s"
    )
    # A lease, and the time a busy machine takes to answer (it waited two leases before).
    assert took < lease + 1.2, took
    assert nick_wait[0] < lease + 1.2, nick_wait[0]
    client.send("CAP END")
    client.expect(" 001 erin ")
    got = read_until(client, "said before the crash")
    assert any(t.startswith(":erin!") and " JOIN #dev" in t for t in got), got
    assert lease_of(redis, "erin") == "b"
    # The watcher saw her go with her node, and come back.
    watcher.expect(lambda t: t.startswith(":erin!") and " QUIT " in t)
    watcher.expect(lambda t: t.startswith(":erin!") and " JOIN #dev" in t)
    gus.close()


def test_logins_fail_closed_while_redis_is_unreachable_and_leases_come_back_after_flushall(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    config = shared(postgres)
    a = make_node("a", protocols=PROTOCOLS, overrides=config)
    b = make_node("b", protocols=PROTOCOLS, overrides=config)
    register(a, "fay").close()
    erin = register(a, "erin")
    assert lease_of(redis, "erin") == "a"

    # Emptied: node a announces erin's lease again, and node b still does not take her: a
    # login there goes to node a, or, while node b learns again who is on node a (it asks
    # every node for its state when its stream was lost), is refused naming node a.
    assert redis.command("FLUSHALL") == "+OK"
    eventually(lambda: lease_of(redis, "erin") == "a", 15, "erin's lease announced again")
    visitor = late_sasl(b, "visitor")
    visitor.send(sasl_line("erin"))
    text = sasl_outcome(visitor)
    assert " 903 erin " in text or (" 904 " in text and "(a)" in text), text
    assert lease_of(redis, "erin") == "a"
    visitor.close()

    friend = line(a, "friend")
    join(friend, "dev")
    join(erin, "dev")
    redis.kill()

    # Nothing is confirmed now: every protocol refuses the login and says why.
    def refused_on_irc() -> bool:
        client = irc_sasl(b, "nobody")
        client.send(sasl_line("fay"))
        text = sasl_outcome(client)
        client.close()
        return " 904 " in text and "Redis is unreachable" in text

    eventually(refused_on_irc, 10, "IRC logins refused")
    client = LineClient(b.ports["line"])
    client.expect("*** Choose a nick:")
    client.send(f"/identify fay {PASSWORD}")
    text = client.expect("!!!")
    assert "Redis is unreachable" in text, text
    client.close()
    xmpp = XmppClient(b.ports["xmpp"], source="127.0.0.1")
    token = b64(f"\0fay\0{PASSWORD}")
    xmpp.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
    el = xmpp.expect(lambda el: local(el) in ("success", "failure"))
    assert local(el) == "failure" and local(el[0]) == "temporary-auth-failure"
    assert "Redis is unreachable" in (el.findtext(f"{{{NS_SASL}}}text") or "")
    xmpp.close()
    # Chat on node a goes on meanwhile; erin is still erin.
    erin.send("still here")
    assert friend.expect("still here") == "[#dev] <erin> still here"

    redis.start()

    def accepted() -> bool:
        client = irc_sasl(b, "fayirc")
        client.send(sasl_line("fay"))
        text = sasl_outcome(client)
        client.close()
        return " 903 " in text

    eventually(accepted, 15, "logins accepted once Redis is back")
    eventually(lambda: lease_of(redis, "erin") == "a", 15, "erin's lease claimed again")


# -- handing an always-on user over ---------------------------------------------------------


def privmsgs(lines: list[str], room: str) -> list[str]:
    marker = f" PRIVMSG #{room} :"
    return [text.split(marker, 1)[1] for text in lines if marker in text]


def read_until(client: LineClient, marker: str, timeout: float = 15.0) -> list[str]:
    """Every line up to and including the first that contains ``marker``."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        text = client.read_line(timeout=max(deadline - time.monotonic(), 0.01))
        got.append(text)
        if marker in text:
            return got


def is_away(client: LineClient, nick: str) -> bool:
    client.send(f"WHOIS {nick}")
    found = []
    while True:
        text = client.expect(lambda t: " 301 " in t or " 318 " in t)
        found.append(text)
        if " 318 " in text:
            return any(" 301 " in t for t in found)


class Ticker(threading.Thread):
    """Says ``tick N`` in a room every few milliseconds until stopped."""

    def __init__(self, client: LineClient, room: str) -> None:
        super().__init__(daemon=True)
        self.client, self.room = client, room
        self.sent = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.client.send(f"PRIVMSG #{self.room} :tick {self.sent}")
            self.sent += 1
            time.sleep(0.02)


def test_an_always_on_irc_user_is_handed_over_to_the_node_its_owner_logs_in_on(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    config = shared(postgres)
    a = make_node("a", protocols=PROTOCOLS, overrides=config)
    b = make_node("b", protocols=PROTOCOLS, overrides=config)
    alice = register(a, "alice", always_on=True)
    join(alice, "dev")
    watch_a, watch_b, ticker_client = irc(a, "wa"), irc(b, "wb"), irc(a, "ticker")
    for client, nick in ((watch_a, "wa"), (watch_b, "wb"), (ticker_client, "ticker")):
        client.send("JOIN #dev")
        client.expect(f" 366 {nick} #dev ")
    alice.close()
    # Kept on node a, away, in her room (both nodes show her away).
    for watcher in (watch_a, watch_b):
        eventually(lambda w=watcher: is_away(w, "alice"), 10, "alice away")
    assert lease_of(redis, "alice") == "a"
    watch_a.send("PRIVMSG #dev :said on a while alice was away")
    watch_b.send("PRIVMSG #dev :said on b while alice was away")
    watch_a.expect("said on b while")
    watch_b.expect("said on a while")

    # She logs in on node b while the room is busy.
    ticker = Ticker(ticker_client, "dev")
    ticker.start()
    time.sleep(0.3)
    client = irc_sasl(b, "alice", HISTORY_CAPS)
    client.send(sasl_line("alice"))
    text = sasl_outcome(client)
    assert " 903 " in text, text
    client.send("CAP END")
    welcome = client.expect(lambda t: " 001 " in t)
    assert " 001 alice " in welcome, welcome
    time.sleep(0.5)
    ticker.done.set()
    ticker.join()
    ticker_client.send("PRIVMSG #dev :the end")
    got = read_until(client, "the end")
    assert any(" JOIN #dev" in t and t.startswith(":alice!") for t in got), got
    said = privmsgs(got, "dev")
    # What she missed, and what was said while she was handed over: each once.
    assert said.count("said on a while alice was away") == 1, said
    assert said.count("said on b while alice was away") == 1, said
    # (Those said as she came back may come live before the missed ones.)
    ticks = sorted(int(text.split()[1]) for text in said if text.startswith("tick "))
    assert ticks == list(range(ticker.sent)), (ticker.sent, said)
    print(f"{ticker.sent} messages said during the handover, each shown once")

    # Nobody saw her quit or part; she is in the room on both nodes, homed on b.
    for watcher, nick in ((watch_a, "wa"), (watch_b, "wb")):
        seen = read_until(watcher, "the end")
        assert not [t for t in seen if t.startswith(":alice!") and (" QUIT " in t or " PART " in t)]
        watcher.send("NAMES #dev")
        names = watcher.expect(f" 353 {nick} ").rsplit(":", 1)[1].split()
        assert "alice" in [n.lstrip("@+") for n in names], names
    assert lease_of(redis, "alice") == "b"
    assert redis.command("GET", "chatserver:nick:alice") == "b"
    # She talks from b to both nodes, and a private message from a reaches her on b.
    client.send("PRIVMSG #dev :back, on b")
    assert watch_a.expect("back, on b").startswith(":alice!")
    watch_a.send("PRIVMSG alice :psst")
    assert client.expect("psst").endswith("PRIVMSG alice :psst")
    # Still always-on, now kept by node b.
    client.send("QUIT :bye")
    watch_a.send("PRIVMSG #dev :while she is away again")
    watch_a.send("NAMES #dev")
    names = watch_a.expect(" 353 wa ").rsplit(":", 1)[1].split()
    assert "alice" in [n.lstrip("@+") for n in names], names
    eventually(lambda: lease_of(redis, "alice") == "b", 5, "alice kept on b")


def test_an_always_on_line_user_is_handed_over_and_back(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    config = shared(postgres)
    a = make_node("a", protocols=PROTOCOLS, overrides=config)
    b = make_node("b", protocols=PROTOCOLS, overrides=config)
    bob = register(a, "bob", always_on=True)
    join(bob, "ops")
    watcher = line(a, "carol")
    join(watcher, "ops")
    bob.close()
    watcher.expect("bob is away")
    watcher.send("said while bob was kept on a")
    kept_on = "a"
    # To node b, then back to node a.
    for node, name in ((b, "b"), (a, "a")):
        client = LineClient(node.ports["line"])
        client.expect("*** Choose a nick:")
        client.send(f"/identify bob {PASSWORD}")
        client.expect("*** You are bob.")
        try:
            text = client.expect("while you were away in #ops")
        except TimeoutError:
            raise AssertionError(f"no missed messages on node {name}: {client.seen}") from None
        assert text == "*** while you were away in #ops (1 message):", text
        missed = client.expect(lambda t: "said while bob was kept on" in t)
        assert missed.endswith(f"<carol> said while bob was kept on {kept_on}"), missed
        client.send("/who ops")
        assert client.expect("members of #ops") == "*** members of #ops (2): @bob carol"
        assert lease_of(redis, "bob") == name
        client.send("hello from bob")
        assert watcher.expect("hello from bob") == "[#ops] <bob> hello from bob"
        client.close()
        watcher.expect("bob is away")
        kept_on = name
        watcher.send(f"said while bob was kept on {kept_on}")
    # Nothing of this looked like leaving: carol never saw bob quit or part.
    watcher.send("/who ops")
    assert watcher.expect("members of #ops") == "*** members of #ops (2): @bob carol"
    left = [t for t in watcher.seen if t.startswith(("-!- bob quit", "-!- bob left"))]
    assert not left, left


def test_a_login_after_registration_elsewhere_goes_to_the_node_of_the_users_connection(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    config = shared(postgres)
    a = make_node("a", protocols=PROTOCOLS, overrides=config)
    b = make_node("b", protocols=PROTOCOLS, overrides=config)
    dan = register(a, "dan", always_on=True)
    join(dan, "dev")
    # Handed off to node a, as during registration (tests/cluster/test_irc_handoff.py; the
    # whole story: tests/cluster/test_late_irc_login_handoff.py): the always-on user with a
    # connection stays there, and the client is its second connection.
    client = late_sasl(b, "danb")
    client.send(sasl_line("dan"))
    text = sasl_outcome(client)
    assert " 903 dan " in text, text
    client.send("PING :still")
    client.expect("PONG")
    dan.send("/who dev")
    assert dan.expect("members of #dev") == "*** members of #dev (1): @dan"
    assert lease_of(redis, "dan") == "a"
    # One user on two connections does not switch accounts from one of them: refused as on
    # one node, not handed to the node of the other account.
    eve = register(b, "eve")
    client.send(f"NS IDENTIFY eve {PASSWORD}")
    text = client.expect("IDENTIFY")
    assert text.endswith("IDENTIFY failed: you are logged in as dan on other connections too")
    eve.send("/whois dan")
    assert "dan" in eve.expect("dan")


def sasl_login(node: ServerProcess, account: str) -> LineClient:
    """An IRC connection logged in to ``account`` on ``node``, registered on its nick."""
    client = irc_sasl(node, account)
    client.send(sasl_line(account))
    text = sasl_outcome(client)
    assert " 903 " in text, text
    client.send("CAP END")
    client.expect(f" 001 {account} ")
    return client


def test_an_always_on_user_handed_from_node_to_node_hears_every_node_and_a_third_sees_it(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    """Three nodes: the user handed a -> b, which node c sees (its stand-in moves to b),
    then b -> c, which node a sees.  Each room's messages go, from every node, to the node
    the user is on now, even where that node has no other member of the room."""
    config = shared(postgres)
    a, b, c = (make_node(name, protocols=PROTOCOLS, overrides=config) for name in "abc")
    alice = register(a, "alice", always_on=True)
    join(alice, "dev")
    join(alice, "ops")
    # A member on a in both rooms, one on c in #dev only; none on b.
    wa, wc = irc(a, "wa"), irc(c, "wc")
    for client, nick, rooms in ((wa, "wa", ("dev", "ops")), (wc, "wc", ("dev",))):
        for room in rooms:
            client.send(f"JOIN #{room}")
            client.expect(f" 366 {nick} #{room} ")
    # Each says something first: its node works out where the room's messages go.
    wa.send("PRIVMSG #ops :hello from a")
    wc.send("PRIVMSG #dev :hello from c")
    alice.expect("hello from a")
    alice.expect("hello from c")
    alice.close()
    for watcher in (wa, wc):
        eventually(lambda w=watcher: is_away(w, "alice"), 10, "alice kept away")

    for node, name in ((b, "b"), (c, "c")):
        client = sasl_login(node, "alice")
        eventually(lambda n=name: lease_of(redis, "alice") == n, 10, f"alice's lease on {name}")
        said = {
            f"#dev from c to alice on {name}": wc,
            f"#ops from a to alice on {name}": wa,
            f"#dev from a to alice on {name}": wa,
        }
        for text, sender in said.items():
            sender.send(f"PRIVMSG {text.split()[0]} :{text}")
        wc.send(f"PRIVMSG alice :privately from c to alice on {name}")
        heard: set[str] = set()
        wanted = {*said, f"privately from c to alice on {name}"}
        deadline = time.monotonic() + 10
        while not wanted <= heard:
            timeout = deadline - time.monotonic()
            try:
                line = client.read_line(max(timeout, 0.01))
            except TimeoutError:
                raise AssertionError(f"alice on {name} heard only {sorted(heard)}") from None
            if " PRIVMSG " in line:
                heard.add(line.rsplit(" :", 1)[1])
        # She answers from there, and every node shows it.
        client.send(f"PRIVMSG #dev :alice speaks on {name}")
        for watcher in (wa, wc):
            assert watcher.expect(f":alice speaks on {name}").startswith(":alice!")
        client.send("QUIT :bye")
        client.close()
        for watcher in (wa, wc):
            eventually(lambda w=watcher: is_away(w, "alice"), 10, f"alice kept on {name}")
    # Nobody saw her quit or part on the way.
    for watcher in (wa, wc):
        left = [
            t for t in watcher.seen if t.startswith(":alice!") and (" QUIT " in t or " PART " in t)
        ]
        assert not left, left
