"""A room message goes to the other nodes with the lines its node rendered of it, and their
IRC members of the same capabilities get those lines as they are: through real nodes, what
they get is byte for byte what a node that renders every message itself
(``share_rendered = false``) gives its members, for every set of capabilities; members of a
rendering the sending node had no member of, and XMPP and line-chat members, get the
messages made and rendered on their own node; the receiving node's
``chatserver_cluster_run_messages_total{path}`` counts which way each message went."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import pytest

from tests.cluster.test_cluster import eventually, join, line, muc_body, replayed_on_join
from tests.irc.test_cross_line import IrcUser
from tests.matrix.clients import MUC, XmppPeer, local
from tests.ops.test_metrics import get, samples
from tests.support.ports import free_port
from tests.support.redis import RedisServer
from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(120)

PASSWORD = "sender-secret-1"
# The capabilities that change how a room message reads (echo-message only the sender's).
VARIANTS: dict[str, tuple[str, ...]] = {
    "plain": (),
    "time": ("server-time",),
    "tags": ("message-tags",),
    "account": ("account-tag",),
    "echo": ("echo-message",),
    "all": ("server-time", "message-tags", "account-tag", "echo-message"),
}


def node(
    make_server: Callable[..., ServerProcess],
    redis: RedisServer,
    name: str,
    *,
    protocols: tuple[str, ...] = ("irc", "line"),
    share: bool = True,
    metrics: int | None = None,
) -> ServerProcess:
    """A node of the cluster on ``redis`` (its metrics on ``metrics``, a port, if given)."""
    overrides: dict[str, dict[str, object]] = {
        "cluster": {"redis": redis.url, "node": name, "share_rendered": share},
        "irc": {"flood_burst": 0},
        "chat": {"cloak_secret": "one secret for the cluster"},
    }
    if metrics is not None:
        overrides["metrics"] = {"enabled": True, "port": metrics}
    return make_server(protocols=protocols, overrides=overrides)


# How another node's room messages reached a node's members (its metric's ``path`` label).
PATHS = ("shipped", "rendered", "events")


def paths(port: int) -> dict[str, float]:
    """The node's count of other nodes' room messages by path, from its /metrics on ``port``."""
    found = samples(get(f"http://127.0.0.1:{port}/metrics")[2])
    return {
        path: found[("chatserver_cluster_run_messages_total", (("path", path),))] for path in PATHS
    }


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {path: after[path] - before[path] for path in PATHS}


def member(server: ServerProcess, nick: str, caps: tuple[str, ...], room: str) -> LineClient:
    client = IrcUser(server.ports["irc"], nick, caps)
    client.send(f"JOIN #{room}")
    client.expect(lambda text: f" 366 {nick} #{room} " in text)
    return client


def logged_in_sender(server: ServerProcess, nick: str, room: str) -> LineClient:
    """An IRC user logged in to an account (account-tag shows it), a bot (+B: the bot
    tag), with echo-message, in ``room``."""
    first = line(server, nick)
    first.send(f"/register {PASSWORD}")
    first.expect(f"{nick} is now registered")
    first.close()
    client = LineClient(server.ports["irc"])
    client.send("CAP REQ :sasl echo-message message-tags")
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick}")
    client.send("AUTHENTICATE PLAIN")
    client.expect("AUTHENTICATE +")
    client.send("AUTHENTICATE " + base64.b64encode(f"{nick}\0{nick}\0{PASSWORD}".encode()).decode())
    client.expect(" 903 ")
    client.send("CAP END")
    client.expect(lambda text: f" 001 {nick} " in text)
    client.send(f"MODE {nick} +B")
    client.expect(lambda text: " MODE " in text and "+B" in text)
    client.send(f"JOIN #{room}")
    client.expect(lambda text: f" 366 {nick} #{room} " in text)
    return client


def raw_lines(client: LineClient, sender: str, count: int) -> list[bytes]:
    """The next ``count`` lines from ``sender`` (PRIVMSG and NOTICE), as the bytes read."""
    out: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(out) < count and time.monotonic() < deadline:
        while b"\n" not in client.buffer:
            client.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            chunk = client.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            client.buffer += chunk
        data, _, client.buffer = client.buffer.partition(b"\n")
        words = data.split(b" ")
        if data.startswith(b"@"):
            words = words[1:]
        if words[0].startswith(f":{sender}!".encode()) and words[1] in (b"PRIVMSG", b"NOTICE"):
            out.append(data + b"\n")
    assert len(out) == count, out
    return out


def knows(client: LineClient, room: str, nicks: list[str]) -> None:
    """Wait until ``client``'s node lists every one of ``nicks`` in ``room``."""

    def listed() -> bool:
        client.send(f"NAMES #{room}")
        reply = client.expect(lambda text: " 353 " in text)
        client.expect(lambda text: " 366 " in text)
        # The nicks after the trailing ":", less their status prefixes (the room's own name
        # is on the line too, and may hold a nick).
        names = {name.lstrip("~&@%+") for name in reply.split(" :", 1)[1].split()}
        return set(nicks) <= names

    eventually(listed, 15, f"{nicks} in #{room}")


# What the sender says: every kind, client tags, a CTCP, text that must be cut to fit a line
# with the sender's prefix, text beyond ASCII.
SAID = [
    "PRIVMSG #room :hello from the sending node",
    "NOTICE #room :a notice",
    "PRIVMSG #room :\x01ACTION waves\x01",
    "@+draft/reply=abc;+draft/react=x PRIVMSG #room :with client tags",
    "PRIVMSG #room :\x01VERSION\x01",
    "PRIVMSG #room :caf\u00e9 \u2603 " + "\u00e9" * 240,
    "PRIVMSG #room :" + "x" * 440 + " " + "long words " * 4,
    "PRIVMSG #room :last",
]


def test_shipped_lines_are_byte_for_byte_what_the_receiving_node_renders(
    make_server: Callable[..., ServerProcess], redis: RedisServer
) -> None:
    """Three nodes: ``a`` with the sender and a member of each rendering (so it sends the
    lines of each), ``b`` giving its members a's lines, ``c`` rendering every message
    itself, as a node did before lines were shared.  For every set of capabilities, b's
    member reads exactly the bytes c's member reads, and a's."""
    a = node(make_server, redis, "a")
    b = node(make_server, redis, "b")
    c = node(make_server, redis, "c", share=False)
    sender = logged_in_sender(a, "sender", "room")
    clients: dict[tuple[str, str], LineClient] = {}
    for where, server in (("a", a), ("b", b), ("c", c)):
        for name, caps in VARIANTS.items():
            clients[where, name] = member(server, f"{where}{name}", caps, "room")
    nicks = [f"{where}{name}" for where, name in clients]
    for where in "abc":
        knows(clients[where, "plain"], "room", [*nicks, "sender"])
    sender.sock.sendall("".join(f"{text}\r\n" for text in SAID).encode())
    got = {key: raw_lines(client, "sender", len(SAID)) for key, client in clients.items()}
    for name in VARIANTS:
        assert got["b", name] == got["c", name], name
        assert got["b", name] == got["a", name], name
    # The renderings differ where the capabilities do.
    assert got["b", "plain"] != got["b", "time"] != got["b", "tags"] != got["b", "account"]
    assert got["b", "plain"] == got["b", "echo"]
    assert got["b", "account"][0].startswith(b"@account=sender :sender!")
    tags = got["b", "all"][3].split(b" ")[0][1:].split(b";")
    assert {b"+draft/reply=abc", b"+draft/react=x", b"bot", b"account=sender"} <= set(tags)
    assert got["b", "plain"][4].endswith(b" PRIVMSG #room :\x01VERSION\x01\r\n")
    # The line too long with the sender's prefix was cut to 512 bytes, at a character.
    assert len(got["b", "plain"][6]) == 512 and len(got["b", "plain"][5]) <= 512
    # A node that does not share sends its users' messages one by one, as nodes did before
    # runs: they arrive, rendered where they arrive.
    clients["c", "time"].send("PRIVMSG #room :from c")
    for where in "ab":
        (data,) = raw_lines(clients[where, "time"], "ctime", 1)
        assert data.startswith(b"@time=") and data.endswith(b" PRIVMSG #room :from c\r\n")


def test_members_of_a_rendering_the_sending_node_has_not_get_their_own(
    make_server: Callable[..., ServerProcess], redis: RedisServer
) -> None:
    """The sending node has only members without capabilities: the receiving node's member
    with server-time still gets its time tags (made there, not the lines sent), and its
    member without capabilities gets the lines sent, in one room's turn."""
    a = node(make_server, redis, "a")
    b = node(make_server, redis, "b")
    sender = member(a, "sender", (), "room")
    plain_a = member(a, "plaina", (), "room")
    timed = member(b, "timed", ("server-time",), "room")
    plain_b = member(b, "plainb", (), "room")
    knows(plain_a, "room", ["timed", "plainb"])
    knows(plain_b, "room", ["sender", "plaina"])
    sender.sock.sendall("".join(f"PRIVMSG #room :line {i}\r\n" for i in range(50)).encode())
    sent = raw_lines(plain_a, "sender", 50)
    assert raw_lines(plain_b, "sender", 50) == sent
    with_time = raw_lines(timed, "sender", 50)
    for i, data in enumerate(with_time):
        assert data.startswith(b"@time="), data
        assert data.split(b" ", 1)[1] == sent[i], (data, sent[i])


def test_xmpp_line_and_irc_members_of_the_receiving_node_get_every_message(
    make_server: Callable[..., ServerProcess], redis: RedisServer
) -> None:
    """A room with, on the receiving node, an IRC member of the rendering the sending node
    has a member of too (it gets the lines shipped with the messages), one of a rendering
    the sending node has none of (made there), a line-chat member and an XMPP occupant (the
    messages made there as events), and a burst from an IRC user of the other node: each
    gets every message once, in order, in its protocol's form, the shipped lines byte for
    byte those of the sending node's member, and the receiving node counts every message on
    each of the three paths; a line-chat user who joins afterwards is shown the room's
    recent history, made on the receiving node from what was sent."""
    a = node(make_server, redis, "a")
    port = free_port()
    b = node(make_server, redis, "b", protocols=("irc", "line", "xmpp"), metrics=port)
    sender = member(a, "sender", (), "room")
    # The sending node's member without capabilities, kept open and read (a closed client
    # leaves the room, and then the sending node renders nothing to ship).
    plain_a = member(a, "plaina", (), "room")
    plain_b = member(b, "plainb", (), "room")
    tagged = member(b, "tagged", ("message-tags", "server-time"), "room")
    chat = line(b, "chatter")
    join(chat, "room")
    xmpp = XmppPeer(b.ports["xmpp"], "jabber", "jabber-secret-1", register=True)
    try:
        xmpp.join("room")
        xmpp.expect(lambda el: local(el) == "presence" and el.get("from") == f"room@{MUC}/jabber")
        knows(sender, "room", ["plaina", "plainb", "tagged", "chatter", "jabber"])
        knows(plain_b, "room", ["sender", "plaina"])
        before = paths(port)
        count = 300
        texts = [f"burst {i}" for i in range(count)]
        sender.sock.sendall("".join(f"PRIVMSG #room :{text}\r\n" for text in texts).encode())
        got = {client: raw_lines(client, "sender", count) for client in (plain_a, plain_b, tagged)}
        for client, lines in got.items():
            assert [data.rstrip(b"\r\n").split(b" :")[-1].decode() for data in lines] == texts
            # Each in its own rendering.
            assert all(data.startswith(b"@") == (client is tagged) for data in lines)
        assert got[plain_b] == got[plain_a]
        said = []
        while len(said) < count:
            text = chat.read_line(10)
            if "<sender>" in text:
                said.append(text.split("<sender> ", 1)[1])
        assert said == texts
        bodies: list[str] = []
        while len(bodies) < count:
            el = xmpp.expect(lambda el: muc_body(el) is not None, timeout=10)
            bodies.append(muc_body(el) or "")
        assert bodies == texts
        # Every message reached plainb as the lines node a shipped, tagged as lines made
        # on b, and the XMPP and line-chat members as events made on b.
        assert moved(before, paths(port)) == dict.fromkeys(PATHS, count)
        replayed, shown = replayed_on_join(b, "late", "room")
        assert replayed and replayed[-1].endswith(f"<sender> {texts[-1]}"), shown
    finally:
        xmpp.close()
