"""Handed-off clients through a Redis outage in which Redis keeps its data: what they and the
others say meanwhile waits in the nodes' streams and arrives once Redis is back, in order
and exactly once, and their relays go on.  Through two real nodes, a shared PostgreSQL and
a private Redis with an append-only file, a line-chat and an IRC client handed off.

Two outages: Redis paused (SIGSTOP, then SIGCONT), which is what "unreachable" is to a
node (its connections stay open and nothing answers, as when the network to Redis or its
host stalls: each node finds out only by a reply timing out, and its reconnections hang
too); and Redis killed and started again on its data, which refuses connections meanwhile
and comes back with every entry it had answered for.
"""

from __future__ import annotations

import re
import select
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from lxml import etree

from chatserver.cluster.relay import CREEP, Crossing
from tests.cluster.test_accounts import PROTOCOLS, shared
from tests.cluster.test_cluster import eventually, join, line
from tests.cluster.test_handoff import figures, relayed_login
from tests.cluster.test_irc_handoff import account_of, logged_in
from tests.cluster.test_xmpp_handover import xmpp_login
from tests.cluster.test_xmpp_multiclient import first_client
from tests.hostile.clients import local
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer
from tests.support.redis import BINARY, MISSING_REASON, RedisServer
from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(120)

Node = Callable[..., ServerProcess]

OUTAGE = 10.0
# Seconds between one sender's messages during the outage.
STEP = 0.5
# A message's body: its sender's label and its number.
BODY = re.compile(r"\b(laptop|phone|ivy2|bob)-(\d+)$")
# Line chat's idle probe ("any line answers").
LINE_PROBE = "-!- ping: are you there?"
NS_PING = "urn:xmpp:ping"


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A private Redis that keeps its data when it is killed and started again."""
    if BINARY is None:
        pytest.skip(MISSING_REASON)
    server = RedisServer(persist=True).start()
    yield server
    server.destroy()


class Listener:
    """A client whose room messages are counted by sender label, in the order they came."""

    def __init__(self, client: LineClient, label: str) -> None:
        self.client = client
        self.label = label
        self.sent = 0
        # sender label -> bodies received, in order
        self.heard: dict[str, list[str]] = {}
        # Why the server closed the connection, if it did.
        self.closed: str | None = None

    def say(self, say: Callable[[str], str]) -> None:
        self.client.send(say(f"{self.label}-{self.sent}"))
        self.sent += 1

    def pump(self, seconds: float = 0.0) -> None:
        """Read what has arrived (for ``seconds``, or until nothing more is there)."""
        deadline = time.monotonic() + seconds
        while self.closed is None:
            try:
                text = self.client.read_line(max(deadline - time.monotonic(), 0.01))
            except TimeoutError:
                if time.monotonic() >= deadline:
                    return
                continue
            except ConnectionError:
                self.closed = self.client.seen[-1] if self.client.seen else "closed"
                return
            # The server's idle probes are answered: IRC's PING, line chat's question.
            if text.startswith("PING "):
                self.client.send("PONG " + text[5:])
            elif text.startswith(LINE_PROBE):
                self.client.send("/pong")
            found = BODY.search(text)
            if found and ("PRIVMSG #dev :" in text or text.startswith("[#dev] <")):
                self.heard.setdefault(found.group(1), []).append(found.group(0))

    def heard_in(self, labels: tuple[str, ...]) -> int:
        return sum(len(self.heard.get(label, [])) for label in labels)


def line_say(body: str) -> str:
    return body


def irc_say(body: str) -> str:
    return f"PRIVMSG #dev :{body}"


def outage_of(redis: RedisServer, kind: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """(begin, end) of an outage of ``kind``."""
    if kind == "paused":
        return redis.pause, redis.resume
    return redis.kill, lambda: redis.start()


def test_a_wait_is_what_bytes_took_beyond_the_quickest_crossing_whatever_the_clocks() -> None:
    crossing = Crossing()
    # The other node's clock is 5000 s behind this one's; bytes cross in a millisecond.
    offset = 5000.0
    assert crossing.late(100.0, 100.001 + offset) == 0.0
    # One a few milliseconds slower is measured (the quickest has risen by CREEP since).
    assert crossing.late(101.0, 101.005 + offset) == pytest.approx(0.004 - CREEP * 1.004, abs=1e-6)
    # Bytes held up ten seconds (Redis unreachable): all but what the quickest rose by
    # meanwhile.
    assert 10.0 - CREEP * 12 < crossing.late(102.0, 112.001 + offset) < 10.0
    assert crossing.late(112.5, 112.501 + offset) == pytest.approx(0.0, abs=1e-6)
    # Clocks drifting apart by a ten-thousandth (the other one slower) for an hour: no wait.
    for second in range(0, 3600, 10):
        sent = 200.0 + second
        now = sent + offset + 0.001 + second * 1e-4
        assert crossing.late(sent, now) == 0.0, second


@pytest.mark.parametrize("kind", ["paused", "restarted"])
def test_relayed_clients_bytes_wait_through_a_redis_outage_and_arrive_once_in_order(
    make_node: Node, redis: RedisServer, postgres: PostgresServer, kind: str
) -> None:
    # Flood control as it comes for line chat (20 lines at once, 5 a second after that), and
    # tight for IRC (4 at once, 4 a second, 8 waiting at most): what the relayed clients
    # send during the outage, under those rates, arrives in one go after it, well past
    # the bursts, and must not be taken for a flood.
    config = {
        **shared(postgres),
        "irc": {"flood_burst": 4, "flood_rate": 4.0, "flood_max_queue": 8},
    }
    a = make_node("a", overrides=config)
    b = make_node("b", overrides=config)
    # Alice (line chat) and Ivy (IRC) are users of node a; each has a second client on
    # node b, handed off to node a.  Bob is a user of node b.
    account_of(a, "alice")
    laptop = relayed_login(a, "alice")
    join(laptop, "dev")
    account_of(a, "ivy")
    ivy1 = logged_in(a, "ivy", "ivy")
    ivy1.send("JOIN #dev")
    ivy1.expect(" 366 ivy #dev ")
    bob = line(b, "bob")
    join(bob, "dev")
    laptop.expect("-!- bob joined #dev")
    phone = relayed_login(b, "alice")
    phone.expect("*** you are in #dev")
    ivy2 = logged_in(b, "ivy", "ivyx")
    ivy2.expect(" 366 ivy #dev ")
    assert redis.command("GET", "chatserver:account:alice") == "a"
    assert redis.command("GET", "chatserver:account:ivy") == "a"

    clients = {
        "laptop": Listener(laptop, "laptop"),
        "phone": Listener(phone, "phone"),
        "ivy1": Listener(ivy1, "ivy1"),
        "ivy2": Listener(ivy2, "ivy2"),
        "bob": Listener(bob, "bob"),
    }
    senders = {
        "laptop": line_say,
        "phone": line_say,
        "ivy2": irc_say,
        "bob": line_say,
    }
    # What each client is shown of whom: every sender's messages but its own (a line-chat
    # connection is not shown what it sent; an IRC client with echo-message is).
    everyone = tuple(senders)
    shown = {
        "laptop": ("phone", "ivy2", "bob"),
        "phone": ("laptop", "ivy2", "bob"),
        "ivy1": everyone,
        "ivy2": everyone,
        "bob": ("laptop", "phone", "ivy2"),
    }

    def say_round() -> None:
        for label, say in senders.items():
            clients[label].say(say)

    def pump_all(seconds: float) -> None:
        for client in clients.values():
            client.pump(seconds / len(clients))

    def expected(receiver: str) -> dict[str, list[str]]:
        return {
            label: [f"{label}-{n}" for n in range(clients[label].sent)] for label in shown[receiver]
        }

    def missing() -> dict[str, list[str]]:
        """Receiver -> the messages it was not shown yet."""
        out = {}
        for name, listener in clients.items():
            gone = [
                text
                for label, texts in expected(name).items()
                for text in texts
                if text not in listener.heard.get(label, [])
            ]
            if gone:
                out[name] = gone
        return out

    def all_arrived() -> bool:
        pump_all(0.2)
        return not missing() or any(c.closed for c in clients.values())

    # Before: the relays carry both ways.
    for _ in range(3):
        say_round()
    eventually(all_arrived, 15, "the messages before the outage")
    before = {name: {k: list(v) for k, v in c.heard.items()} for name, c in clients.items()}

    begin, end = outage_of(redis, kind)
    begin()
    started = time.monotonic()
    while time.monotonic() - started < OUTAGE:
        say_round()
        pump_all(STEP)
    # Meanwhile only what needs no Redis arrived: on node a, Ivy's first client heard her
    # laptop; every client on node b (handed off or not) heard nothing of anyone.
    sent_during = {label: clients[label].sent for label in senders}
    for name in ("phone", "ivy2", "bob"):
        assert clients[name].heard == before[name], (name, clients[name].heard)
    assert clients["ivy1"].heard["laptop"] == [f"laptop-{n}" for n in range(sent_during["laptop"])]
    end()
    back = time.monotonic()

    # After: the relays still carry both ways (what is said now waits for the nodes to
    # reconnect, and goes after what waited).
    for _ in range(3):
        say_round()
    try:
        eventually(all_arrived, 30, "every message, after the outage")
    except AssertionError:
        raise AssertionError(f"not shown: {missing()}") from None
    # Nobody was closed or told to slow down: what the relayed clients sent during the
    # outage came in one go, but they sent it under their limits.
    assert {name: c.closed for name, c in clients.items() if c.closed} == {}
    warned = [t for c in clients.values() for t in c.client.seen if "too fast" in t]
    assert not warned, warned
    assert not missing(), missing()
    print(f"Redis {kind} {OUTAGE:g}s: everything arrived {time.monotonic() - back:.1f}s after")
    pump_all(1.0)
    # Each client was shown each other sender's messages exactly once, in the order sent.
    for name, listener in clients.items():
        assert {k: v for k, v in listener.heard.items() if k in shown[name]} == expected(name), name
    # The accounts stayed on node a throughout.
    assert redis.command("GET", "chatserver:account:alice") == "a"
    assert redis.command("GET", "chatserver:account:ivy") == "a"


# The idle test's timeouts (IRC ping_interval and ping_timeout, line chat's idle_timeout and
# ping_timeout): seconds of silence before the serving node probes a client, and seconds
# more for the answer.  Redis is paused for longer than both, and a few seconds more.
PROBE_AFTER = 5.0
ANSWER_WITHIN = 3.0
LONG_OUTAGE = PROBE_AFTER + ANSWER_WITHIN + 4.0
# Relays of clients whose socket is on node b, as node a's metrics count them.
SERVED_FOR_B = ("chatserver_relayed_connections", (("node", "b"), ("side", "served")))


def test_the_serving_nodes_idle_timeout_ends_relayed_clients_a_redis_outage_keeps_silent(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    """Redis paused for longer than the idle timeout: nothing a relayed client sends
    reaches its serving node meanwhile, so that node's idle timeout ends it there and then
    (a silent IRC client, and a line-chat client that goes on talking alike), while the
    clients that answer the nodes' probes stay.  The relayed clients see nothing until
    Redis is back; then the probe and the close, with the timeout's words, and their
    sockets close; what one of them said meanwhile is shown to no one."""
    config = shared(postgres)
    config["irc"] = {**config["irc"], "ping_interval": PROBE_AFTER, "ping_timeout": ANSWER_WITHIN}
    config["line"] = {"idle_timeout": PROBE_AFTER, "ping_timeout": ANSWER_WITHIN}
    a_port = free_port()
    a = make_node("a", overrides={**config, "metrics": {"enabled": True, "port": a_port}})
    b = make_node("b", overrides=config)
    # Ivy (IRC) and Alice (line chat) are users of node a, each with a second client on
    # node b handed off to node a; Bob is a user of node b.
    account_of(a, "ivy")
    account_of(a, "alice")
    ivy1 = logged_in(a, "ivy", "ivy")
    laptop = relayed_login(a, "alice")
    join(laptop, "dev")
    bob = line(b, "bob")
    join(bob, "dev")
    ivy2 = logged_in(b, "ivy", "ivyx")
    phone = relayed_login(b, "alice")
    phone.expect("*** you are in #dev")
    clients = {
        "ivy1": Listener(ivy1, "ivy1"),
        "laptop": Listener(laptop, "laptop"),
        "bob": Listener(bob, "bob"),
        "ivy2": Listener(ivy2, "ivy2"),
        "phone": Listener(phone, "phone"),
    }
    relayed = ("ivy2", "phone")

    def pump_all(seconds: float) -> None:
        for client in clients.values():
            client.pump(seconds / len(clients))

    # Both relays carry, just before the outage: the phone's message reaches the others,
    # and Ivy's second client is answered by node a.  What the relayed clients send here is
    # the last node a hears of them.  (The others speak too: a probe that came during the
    # setup is answered.)
    last_sent = time.monotonic()
    clients["phone"].say(line_say)
    ivy2.send("PING :before")
    ivy1.send("PING :before")
    for client in (laptop, bob):
        client.send("/ping")

    def carried() -> bool:
        pump_all(0.2)
        return any(" PONG " in text and text.endswith("before") for text in ivy2.seen) and all(
            clients[name].heard.get("phone") == ["phone-0"] for name in ("laptop", "bob")
        )

    eventually(carried, 15, "the relays carry both ways")
    assert figures(a_port).get(SERVED_FOR_B) == 2
    seen = {name: len(clients[name].client.seen) for name in relayed}

    redis.pause()
    started = time.monotonic()
    # When node a was seen serving them no more.
    ended: float | None = None
    try:
        while time.monotonic() - started < LONG_OUTAGE:
            clients["phone"].say(line_say)
            pump_all(STEP)
            if ended is None and not figures(a_port).get(SERVED_FOR_B):
                ended = time.monotonic()
        # The relayed clients saw nothing meanwhile.
        assert {name: clients[name].client.seen[seen[name] :] for name in relayed} == {
            name: [] for name in relayed
        }
    finally:
        redis.resume()
    assert ended is not None, "node a served the relayed clients throughout the outage"
    print(
        f"Redis paused {LONG_OUTAGE:g}s: the relayed clients were ended"
        f" {ended - started:.1f}s into it, {ended - last_sent:.1f}s after their last bytes"
    )
    # Ended for their silence: not before the probe and its answer were due.
    assert ended - last_sent >= PROBE_AFTER + ANSWER_WITHIN - 0.1, ended - last_sent

    # Redis back: the relayed clients are told why, and their sockets close.
    irc_end = ivy2.read_until_closed(timeout=30)
    assert any(text.startswith("PING ") for text in irc_end), irc_end
    assert [t for t in irc_end if t.startswith("ERROR :") and "(Ping timeout" in t], irc_end
    line_end = phone.read_until_closed(timeout=30)
    assert any(text.startswith(LINE_PROBE) for text in line_end), line_end
    closing = f"-!- Server closing connection: Ping timeout: no answer in {ANSWER_WITHIN:g} seconds"
    assert closing in line_end, line_end

    # The others stayed, and what the phone said in the outage reached none of them: Bob's
    # message after it goes from node b after the phone's (its stream keeps their order).
    clients["bob"].say(line_say)

    def bob_heard() -> bool:
        pump_all(0.2)
        return clients["laptop"].heard.get("bob") == ["bob-0"]

    eventually(bob_heard, 30, "Bob's message after the outage reaches Alice")
    pump_all(0.5)
    assert {name: c.closed for name, c in clients.items() if c.closed and name not in relayed} == {}
    for name in ("laptop", "bob"):
        assert clients[name].heard.get("phone") == ["phone-0"], name
    assert not figures(a_port).get(SERVED_FOR_B)


def test_the_serving_nodes_idle_timeout_ends_a_relayed_xmpp_stream_a_redis_outage_keeps_silent(
    make_node: Node, redis: RedisServer, postgres: PostgresServer
) -> None:
    """The XMPP form: a stream on node b handed off to node a, silent through a Redis pause
    longer than XMPP's idle timeout and its ping's answer time, is ended by node a, while
    the account's client on node a, which answers its pings, stays.  The relayed stream
    sees nothing until Redis is back; then node a's ping and the stream error
    ``connection-timeout``, and its socket closes."""
    config = shared(postgres)
    config["xmpp"] = {"idle_timeout": PROBE_AFTER, "ping_timeout": ANSWER_WITHIN}
    a_port = free_port()
    a = make_node(
        "a", protocols=PROTOCOLS, overrides={**config, "metrics": {"enabled": True, "port": a_port}}
    )
    b = make_node("b", protocols=PROTOCOLS, overrides=config)
    desk = first_client(a, "cyd")
    pinged: list[str] = []

    def answer_pings(el: Any) -> bool:
        # The serving node's idle probe (XEP-0199) to the desk: answered at once.
        if (
            local(el) == "iq"
            and el.get("type") == "get"
            and el.find(f"{{{NS_PING}}}ping") is not None
        ):
            pinged.append(el.get("id") or "")
            desk.send(f"<iq type='result' id='{el.get('id')}' to='{el.get('from')}'/>")
            return True
        return False

    desk.on_element = answer_pings
    phone = xmpp_login(b, "cyd", "phone")
    phone.send("<presence/>")
    desk.expect(lambda el: local(el) == "presence" and (el.get("from") or "").endswith("/phone"))
    assert figures(a_port).get(SERVED_FOR_B) == 1
    # The phone's last bytes before the outage, answered through the relay.
    phone.ping()
    last_sent = time.monotonic()
    later: list[Any] = []
    phone.on_element = lambda el: later.append(el) or True

    seen_by_desk: list[Any] = []
    pinged.clear()
    redis.pause()
    started = time.monotonic()
    ended: float | None = None
    try:
        while time.monotonic() - started < LONG_OUTAGE:
            try:
                seen_by_desk.append(desk.next(STEP))
            except TimeoutError:
                pass
            if ended is None and not figures(a_port).get(SERVED_FOR_B):
                ended = time.monotonic()
        # The relayed stream saw nothing meanwhile: not a byte waits on its socket.
        waiting, _, _ = select.select([phone.sock], [], [], 0)
        assert not waiting and not phone.pending
    finally:
        redis.resume()
    assert ended is not None, "node a served the relayed stream throughout the outage"
    assert ended - last_sent >= PROBE_AFTER + ANSWER_WITHIN - 0.1, ended - last_sent
    assert pinged, "node a did not probe the desk in the outage"

    # Redis back: node a's ping, then the stream error, and the socket closes.
    assert phone.until_closed(30) == "connection-timeout"
    assert any(local(el) == "iq" and el.find(f"{{{NS_PING}}}ping") is not None for el in later), [
        etree.tostring(el)[:200] for el in later
    ]
    # The desk stayed, and saw the phone go when node a ended it.
    assert [
        el.get("type")
        for el in seen_by_desk
        if local(el) == "presence" and (el.get("from") or "").endswith("/phone")
    ] == ["unavailable"], [etree.tostring(el)[:200] for el in seen_by_desk]
    desk.ping()
    assert not figures(a_port).get(SERVED_FOR_B)
