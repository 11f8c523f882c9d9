"""The IRC connection: framing and bad input, flood control, timers, labeled-response and batch,
slow readers, closing; and the real server over sockets."""

from __future__ import annotations

import gc
import socket
import ssl
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport

from chatserver.config import IrcConfig
from protocols.irc.commands import COMMANDS, CommandSpec
from tests.irc.conftest import IrcWorld, commands, find, last_param, one
from tests.support.server import LineClient, ServerProcess

# -- framing -----------------------------------------------------------------------------------


def test_line_endings_and_split_reads(irc: IrcWorld) -> None:
    c = irc.connect()
    c.feed(b"NICK al")
    c.feed(b"ice\nUSER a 0 * :A\r")
    c.feed(b"\n\r\n\n")
    assert "001" in commands(c.take())
    assert one(c.ask("PING a"), "PONG")


def test_oversize_line_gets_417_and_connection_lives(irc: IrcWorld) -> None:
    a = irc.client("alice")
    b = irc.client("bob")
    a.send("JOIN #r")
    b.send("JOIN #r")
    b.take()
    out = a.ask("PRIVMSG #r :" + "x" * 600)
    assert commands(out) == ["417"]
    assert b.take() == []
    assert not a.closed
    assert one(a.ask("PING ok"), "PONG")


def test_tags_too_long_gets_417(irc: IrcWorld) -> None:
    a = irc.client("alice")
    out = a.ask("@+x=" + "y" * 9000 + " PING z")
    assert commands(out) == ["417"]
    # A client may send 4094 bytes of tag data (the rest of the 8191 is the server's).
    out = a.ask("@+x=" + "y" * 5000 + " PING z")
    assert commands(out) == ["417"]
    # Within them, the line is fine even though it is far past 512.
    out = a.ask("@+x=" + "y" * 4091 + " PING z")
    assert commands(out) == ["PONG"]


def test_endless_line_is_discarded_without_buffering(irc: IrcWorld) -> None:
    a = irc.client("alice")
    for _ in range(50):
        a.feed(b"x" * 4096)
        assert a.conn._lines.pending <= 8191 + 512
    assert a.take() == []
    a.feed(b"tail\r\nPING after\r\n")
    out = a.take()
    assert commands(out) == ["417", "PONG"]


def test_invalid_utf8_is_refused_with_fail(irc: IrcWorld) -> None:
    a = irc.client("alice")
    b = irc.client("bob")
    a.send("JOIN #r")
    b.send("JOIN #r")
    b.take()
    a.take()
    a.feed(b"PRIVMSG #r :caf\xe9\r\n")
    fail = one(a.take(), "FAIL")
    assert fail.params[:2] == ("PRIVMSG", "INVALID_UTF8")
    assert b.take() == []


def test_nul_and_bare_cr_are_refused(irc: IrcWorld) -> None:
    a = irc.client("alice")
    b = irc.client("bob")
    a.send("JOIN #r")
    b.send("JOIN #r")
    b.take()
    a.take()
    a.feed(b"PRIVMSG #r :a\x00b\r\n")
    a.feed(b"PRIVMSG #r :a\rQUIT\r\n")
    out = a.take()
    assert commands(out) == ["400", "400"]
    assert b.take() == []
    assert not a.closed


def test_utf8only_is_advertised(irc: IrcWorld) -> None:
    c = irc.connect()
    c.send("NICK a", "USER a 0 * :A")
    tokens = [p for m in find(c.take(), "005") for p in m.params]
    assert "UTF8ONLY" in tokens


# -- flood control -----------------------------------------------------------------------------


def flood_world(make_irc: Callable[..., IrcWorld], **kwargs: Any) -> IrcWorld:
    config = IrcConfig(flood_burst=5, flood_rate=1.0, flood_max_queue=10, **kwargs)
    return make_irc(config=config)


def test_excess_commands_are_delayed(make_irc: Callable[..., IrcWorld]) -> None:
    world = flood_world(make_irc)
    a = world.client("alice")
    b = world.client("bob")
    a.send("JOIN #r")
    b.send("JOIN #r")
    world.clock.advance(10)
    b.take()
    a.feed(b"".join(b"PRIVMSG #r :line %d\r\n" % i for i in range(8)))
    first = [m.params[1] for m in find(b.take(), "PRIVMSG")]
    assert 0 < len(first) < 8
    assert first == [f"line {i}" for i in range(len(first))]
    world.clock.advance(1)
    assert len(find(b.take(), "PRIVMSG")) == 1
    world.clock.advance(10)
    rest = [m.params[1] for m in find(b.take(), "PRIVMSG")]
    assert [*first, "line %d" % len(first), *rest] == [f"line {i}" for i in range(8)]
    assert not a.closed


def test_flooding_past_the_queue_closes_the_connection(make_irc: Callable[..., IrcWorld]) -> None:
    world = flood_world(make_irc)
    a = world.client("alice")
    b = world.client("bob")
    a.send("JOIN #r")
    b.send("JOIN #r")
    world.clock.advance(10)
    b.take()
    a.feed(b"".join(b"PRIVMSG #r :spam %d\r\n" % i for i in range(30)))
    assert a.closed
    assert "Excess Flood" in last_param(one(a.take(), "ERROR"))
    quit_msg = one(b.take(), "QUIT")
    assert last_param(quit_msg) == "Excess Flood"


def test_flood_exempt_addresses(make_irc: Callable[..., IrcWorld]) -> None:
    world = flood_world(make_irc, flood_exempt=("192.0.2.0/24",))
    a = world.client("alice")
    b = world.client("bob", address="198.51.100.1")
    a.send("JOIN #r")
    b.send("JOIN #r")
    b.take()
    a.feed(b"".join(b"PRIVMSG #r :fast %d\r\n" % i for i in range(10)))
    assert len(find(b.take(), "PRIVMSG")) == 10
    assert not a.closed


def test_expensive_commands_cost_more(make_irc: Callable[..., IrcWorld]) -> None:
    world = flood_world(make_irc)
    a = world.client("alice")
    world.clock.advance(10)
    a.take()
    a.feed(b"LIST\r\nLIST\r\nLIST\r\nPING x\r\n")
    out = a.take()
    assert len(find(out, "323")) == 2  # 3 tokens each: the third waits
    world.clock.advance(5)
    out = a.take()
    assert commands(out)[-1] == "PONG"


# -- timers ------------------------------------------------------------------------------------


def test_ping_timeout(make_irc: Callable[..., IrcWorld]) -> None:
    world = make_irc(config=IrcConfig(flood_burst=0, ping_interval=100, ping_timeout=30))
    a = world.client("alice")
    b = world.client("bob")
    a.send("JOIN #r")
    b.send("JOIN #r")
    a.take()
    b.take()
    world.clock.advance(100)
    ping = one(a.take(), "PING")
    assert ping.params == ("irc.test",)
    a.send("PONG :irc.test")
    b.send("PONG :irc.test")
    world.clock.advance(30)
    assert not a.closed
    # Activity counts as life: no PING for a talking client.
    for _ in range(5):
        world.clock.advance(50)
        b.send("PING keepalive")
    assert not b.closed
    world.clock.advance(200)
    assert a.closed
    assert "Ping timeout" in last_param(one(a.take(), "ERROR"))
    assert last_param(one(b.take(), "QUIT")).startswith("Ping timeout")


# -- labeled-response and batch ----------------------------------------------------------------


def test_labeled_response(irc: IrcWorld) -> None:
    a = irc.client("alice", caps=("labeled-response", "batch"))
    ack = a.ask("@label=one PONG x")
    assert len(ack) == 1 and ack[0].command == "ACK" and ack[0].tags == {"label": "one"}
    pong = one(a.ask("@label=two PING y"), "PONG")
    assert pong.tags == {"label": "two"}
    out = a.ask("@label=th\\sree JOIN #r")
    assert out[0].command == "BATCH" and out[0].tags["label"] == "th ree"
    batch_id = out[0].params[0][1:]
    assert out[0].params[1] == "labeled-response"
    assert all(m.tags.get("batch") == batch_id for m in out[1:-1])
    assert out[-1].command == "BATCH" and out[-1].params == ("-" + batch_id,)
    assert commands(out[1:-1]) == ["JOIN", "353", "366"]
    # Without a label, no wrapping.
    assert "BATCH" not in commands(a.ask("NAMES #r"))


def test_labeled_response_without_batch(irc: IrcWorld) -> None:
    a = irc.client("alice", caps=("labeled-response",))
    out = a.ask("@label=x JOIN #r")
    assert out[0].tags == {"label": "x"}
    assert all("label" not in m.tags for m in out[1:])
    assert "BATCH" not in commands(out)


def test_label_ignored_without_the_cap(irc: IrcWorld) -> None:
    a = irc.client("alice")
    out = a.ask("@label=x PING y")
    assert out[0].tags == {}


def test_deferred_handler_keeps_the_reply_open(
    irc: IrcWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    pending: list[Deferred] = []

    def slow(conn, msg):  # type: ignore[no-untyped-def]
        conn.reply("300", "first")
        d: Deferred = Deferred()

        def later(_: Any) -> None:
            conn.reply("300", "second")

        d.addCallback(later)
        pending.append(d)
        return d

    monkeypatch.setitem(COMMANDS, "SLOWCMD", CommandSpec("SLOWCMD", slow))
    a = irc.client("alice", caps=("labeled-response", "batch"))
    b = irc.client("bob")
    b.send("JOIN #r")
    a.send("JOIN #r")
    a.take()
    a.send("@label=s SLOWCMD", "PING after")
    # Nothing of the command yet, and the PING waits behind it; events from others still flow.
    assert a.take() == []
    b.send("PRIVMSG #r :meanwhile")
    assert commands(a.take()) == ["PRIVMSG"]
    pending[0].callback(None)
    out = a.take()
    assert commands(out) == ["BATCH", "300", "300", "BATCH", "PONG"]
    assert [last_param(m) for m in out[1:3]] == ["first", "second"]


def test_nested_batches_keep_their_own_tags(irc: IrcWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    def batched(conn, msg):  # type: ignore[no-untyped-def]
        inner = conn.start_batch("example.com/test")
        conn.send("NOTICE", conn.nick, "inside", tags={"batch": inner} if inner else None)
        conn.end_batch(inner)

    monkeypatch.setitem(COMMANDS, "BATCHCMD", CommandSpec("BATCHCMD", batched))
    plain = irc.client("plain")
    assert commands(plain.ask("BATCHCMD")) == ["NOTICE"]
    a = irc.client("alice", caps=("labeled-response", "batch"))
    out = a.ask("@label=n BATCHCMD")
    outer = out[0].params[0][1:]
    inner_start = out[1]
    assert inner_start.command == "BATCH" and inner_start.tags["batch"] == outer
    inner = inner_start.params[0][1:]
    assert out[2].tags["batch"] == inner
    assert out[3].params == ("-" + inner,) and out[3].tags["batch"] == outer
    assert out[4].params == ("-" + outer,)


# -- closing -----------------------------------------------------------------------------------


def test_disconnect_and_quit_once(irc: IrcWorld) -> None:
    a = irc.client("alice")
    b = irc.client("bob")
    a.send("JOIN #r")
    b.send("JOIN #r")
    b.take()
    a.conn.disconnect("Server shutting down")
    error = one(a.take(), "ERROR")
    assert last_param(error).startswith("Closing Link: alice[")
    assert last_param(error).endswith("(Server shutting down)")
    a.lose()
    quits = find(b.take(), "QUIT")
    assert len(quits) == 1 and last_param(quits[0]) == "Server shutting down"
    assert irc.service.connection_count() == 1


def test_client_going_away(irc: IrcWorld) -> None:
    a = irc.client("alice")
    b = irc.client("bob")
    a.send("JOIN #r")
    b.send("JOIN #r")
    b.take()
    a.lose()
    assert last_param(one(b.take(), "QUIT")) == "Connection closed"
    assert irc.service.find_user("alice") is None
    assert a.conn not in irc.factory.connections


def test_kill_from_the_core(irc: IrcWorld) -> None:
    op = irc.client("oper")
    op.world.service.users.set_mode(op.user, "oper", True)
    a = irc.client("alice")
    irc.service.kill(op.conn.core, "alice", "enough")
    assert "Killed by oper: enough" in last_param(one(a.take(), "ERROR"))
    assert a.closed


def test_slow_reader_is_disconnected(make_irc: Callable[..., IrcWorld]) -> None:
    world = make_irc(config=IrcConfig(flood_burst=0, sendq_bytes=64 * 1024))
    slow = world.client("slow")
    fast = world.client("fast")
    slow.send("JOIN #r")
    fast.send("JOIN #r")
    slow.transport.producer.pauseProducing()  # the transport's buffer is full
    for i in range(200):
        fast.send("PRIVMSG #r :" + f"{i} " + "x" * 400)
    assert slow.transport.disconnecting
    slow.lose()
    assert world.service.find_user("slow") is None
    assert not fast.closed


def test_tcp_nodelay_and_tls_flag(irc: IrcWorld) -> None:
    class Transport(StringTransport):
        nodelay = False

        def setTcpNoDelay(self, enabled: bool) -> None:
            self.nodelay = enabled

    conn = irc.factory.buildProtocol(None)
    transport = Transport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5000))
    conn.makeConnection(transport)
    assert transport.nodelay
    assert not conn.tls
    assert conn.secure  # loopback
    conn.connectionLost(None)


def test_renderer_failure_does_not_break_delivery(irc: IrcWorld) -> None:
    a = irc.client("alice")

    class Weird:
        rendered: dict = {}

    a.conn.deliver(Weird())  # no renderer: ignored
    assert a.take() == []


# -- the real server ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_real_server_irc_and_line_chat(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(protocols=("line", "irc"))
    irc = LineClient(server.ports["irc"])
    irc.send("CAP LS 302")
    assert "sasl" in irc.cap_ls()
    irc.send("CAP REQ :server-time message-tags echo-message")
    irc.expect("ACK")
    irc.send("NICK ircuser")
    irc.send("USER u 0 * :IRC User")
    irc.send("CAP END")
    irc.expect(" 001 ircuser ")
    irc.expect(lambda line: " 376 " in line or " 422 " in line)
    irc.send("JOIN #lobby")
    irc.expect(" 366 ircuser #lobby ")

    line = LineClient(server.ports["line"])
    line.expect("*** Choose a nick:")
    line.send("lina")
    line.expect("*** You are lina.")
    line.send("/join lobby")
    line.expect("*** now talking in #lobby")
    joined = irc.expect(" JOIN #lobby")
    assert joined.startswith("@time=") and ":lina!" in joined

    irc.send("PRIVMSG #lobby :hello from irc")
    echo = irc.expect("PRIVMSG #lobby :hello from irc")
    assert "msgid=" in echo
    line.expect("<ircuser> hello from irc")
    line.send("hello from line")
    got = irc.expect("hello from line")
    assert ":lina!" in got and "PRIVMSG #lobby" in got
    line.send("/me dances")
    assert "\x01ACTION dances\x01" in irc.expect("ACTION")
    irc.send("PRIVMSG #lobby :\x01ACTION waves\x01")
    assert line.expect("ircuser waves").endswith("* ircuser waves")

    irc.send("PING :tok en")
    assert irc.expect("PONG").endswith(":tok en")
    irc.send("PRIVMSG #lobby :" + "z" * 600)
    irc.expect(" 417 ")
    irc.send("QUIT :done here")
    irc.expect("ERROR :Closing Link")
    line.expect("ircuser")
    irc.close()
    line.close()


@pytest.mark.timeout(60)
def test_real_server_tls_port(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(protocols=("irc",))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", server.ports["irc_tls"]), timeout=10)
    sock = context.wrap_socket(raw, server_hostname="localhost")
    sock.sendall(b"NICK tlsuser\r\nUSER t 0 * :T\r\n")
    data = b""
    while b" 001 " not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    assert b":test.chatserver 001 tlsuser" in data
    sock.close()


@pytest.mark.timeout(60)
def test_real_server_long_line_chat_message_and_labels(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(protocols=("line", "irc"))
    irc = LineClient(server.ports["irc"])
    irc.send("CAP LS 302")
    irc.cap_ls()
    irc.send("CAP REQ :labeled-response batch multi-prefix")
    irc.expect("ACK")
    irc.send("NICK reader")
    irc.send("USER r 0 * :Reader")
    irc.send("CAP END")
    irc.expect(" 001 reader ")
    irc.send("@label=j1 JOIN #long")
    start = irc.expect("BATCH +")
    assert start.startswith("@label=j1 ") and start.endswith(" labeled-response")
    batch_id = start.split("BATCH +", 1)[1].split(" ")[0]
    irc.expect(f"BATCH -{batch_id}")
    irc.send("@label=p1 PONG x")
    assert irc.expect("ACK").startswith("@label=p1 ")

    line = LineClient(server.ports["line"])
    line.expect("*** Choose a nick:")
    line.send("writer")
    line.expect("*** You are writer.")
    line.send("/join long")
    line.expect("*** now talking in #long")
    text = "ü" * 1000
    line.send(text)
    pieces = []
    while len("".join(pieces)) < len(text):
        got = irc.expect("PRIVMSG #long :")
        assert len(got.encode()) + 2 <= 512
        pieces.append(got.split("PRIVMSG #long :", 1)[1])
    assert "".join(pieces) == text
    irc.close()
    line.close()


@pytest.mark.parametrize("how", ["quit", "lost", "unregistered"])
def test_a_closed_connection_is_freed_without_the_garbage_collector(
    irc: IrcWorld, how: str
) -> None:
    # A burst of short connections left each one's objects to the cyclic collector, whose
    # full collections then cost a tenth of what a connection costs.
    c = irc.connect() if how == "unregistered" else irc.client("leaver")
    c.send("JOIN #a")
    if how == "lost":
        c.lose()
    else:
        c.send("QUIT :bye")
    assert c.closed
    conn = weakref.ref(c.conn)
    gc.collect()
    gc.disable()
    try:
        # What Twisted's TCP transport does once the connection is lost: let go of the protocol.
        c.transport.protocol = None
        irc.clients.remove(c)
        del c
        assert conn() is None, gc.get_referrers(conn())
    finally:
        gc.enable()
