"""``chatserver_cluster_run_messages_total{path}``: how another node's room messages reached
a node's members, through real nodes and their /metrics.  The lines the sending node
rendered (``shipped``) for IRC members of a rendering it had members of; lines rendered on
the receiving node (``rendered``) for a rendering it had none of, in a room that refuses
CTCP there, when the receiving or the sending node does not share; and Message events
(``events``) for an XMPP occupant."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cluster.test_cluster import eventually, muc_body
from tests.cluster.test_rendered import PATHS, knows, member, moved, paths, raw_lines
from tests.cluster.test_rendered import node as cluster_node
from tests.matrix.clients import MUC, XmppPeer, local
from tests.ops.test_metrics import get, samples
from tests.support.ports import free_port
from tests.support.redis import RedisServer
from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(120)

# Messages per burst: more than one reactor turn's worth is not needed, but a burst may
# still go as several runs; each message counts once per path all the same.
BURST = 20


def node(
    make_server: Callable[..., ServerProcess],
    redis: RedisServer,
    name: str,
    *,
    protocols: tuple[str, ...] = ("irc",),
    share: bool = True,
) -> tuple[ServerProcess, int]:
    """A node with its metrics on, and the port they are on."""
    port = free_port()
    return cluster_node(
        make_server, redis, name, protocols=protocols, share=share, metrics=port
    ), port


def burst(sender: LineClient, room: str, tag: str) -> list[str]:
    texts = [f"{tag} {i}" for i in range(BURST)]
    sender.sock.sendall("".join(f"PRIVMSG #{room} :{text}\r\n" for text in texts).encode())
    return texts


def test_shipped_lines_lines_rendered_here_and_events_are_counted_apart(
    make_server: Callable[..., ServerProcess], redis: RedisServer
) -> None:
    a, a_port = node(make_server, redis, "a")
    b, b_port = node(make_server, redis, "b", protocols=("irc", "xmpp"))
    # The sending node's own users' messages are not another node's: never counted there.
    nothing = dict.fromkeys(PATHS, 0.0)
    assert paths(a_port) == paths(b_port) == nothing

    # A member of the rendering node a shipped (a has a member without capabilities).
    sender = member(a, "sender", (), "shipped")
    # A member of a's own of that rendering (kept open: a closed client leaves the room).
    watcher = member(a, "watcher", (), "shipped")
    plain = member(b, "plain", (), "shipped")
    knows(sender, "shipped", ["plain"])
    before = paths(b_port)
    burst(sender, "shipped", "s")
    raw_lines(watcher, "sender", BURST)
    raw_lines(plain, "sender", BURST)
    assert moved(before, paths(b_port)) == {"shipped": BURST, "rendered": 0, "events": 0}

    # A member of a rendering node a has no member of (server-time): rendered on b.
    sender.send("JOIN #timed")
    sender.expect(lambda text: " 366 sender #timed " in text)
    timed = member(b, "timed", ("server-time",), "timed")
    knows(sender, "timed", ["timed"])
    before = paths(b_port)
    burst(sender, "timed", "t")
    assert all(data.startswith(b"@time=") for data in raw_lines(timed, "sender", BURST))
    assert moved(before, paths(b_port)) == {"shipped": 0, "rendered": BURST, "events": 0}

    # Both in one room: each message reached b's members by both paths, and counts on both.
    timed.send("JOIN #shipped")
    timed.expect(lambda text: " 366 timed #shipped " in text)
    knows(sender, "shipped", ["plain", "timed"])
    before = paths(b_port)
    burst(sender, "shipped", "b")
    raw_lines(plain, "sender", BURST)
    raw_lines(timed, "sender", BURST)
    assert moved(before, paths(b_port)) == {"shipped": BURST, "rendered": BURST, "events": 0}

    # A room that refuses CTCP: b makes the messages to leave any CTCP out, and renders them.
    sender.send("MODE #shipped +C")
    sender.expect(lambda text: " MODE #shipped +C" in text)

    def refuses_ctcp() -> bool:
        plain.send("MODE #shipped")
        return "C" in plain.expect(lambda text: " 324 plain #shipped " in text).split()[4]

    eventually(refuses_ctcp, 15, "b knows #shipped refuses CTCP")
    timed.send("PART #shipped")
    timed.expect(lambda text: " PART #shipped" in text)
    knows(sender, "shipped", ["plain"])
    before = paths(b_port)
    burst(sender, "shipped", "c")
    raw_lines(plain, "sender", BURST)
    assert moved(before, paths(b_port)) == {"shipped": 0, "rendered": BURST, "events": 0}

    # An XMPP occupant: the messages made as events on b.
    sender.send("JOIN #muc")
    sender.expect(lambda text: " 366 sender #muc " in text)
    xmpp = XmppPeer(b.ports["xmpp"], "jabber", "jabber-secret-1", register=True)
    try:
        xmpp.join("muc")
        xmpp.expect(lambda el: local(el) == "presence" and el.get("from") == f"muc@{MUC}/jabber")
        knows(sender, "muc", ["jabber"])
        before = paths(b_port)
        texts = burst(sender, "muc", "x")
        bodies = []
        while len(bodies) < BURST:
            el = xmpp.expect(lambda el: muc_body(el) is not None, timeout=10)
            bodies.append(muc_body(el))
        assert bodies == texts
        assert moved(before, paths(b_port)) == {"shipped": 0, "rendered": 0, "events": BURST}
    finally:
        xmpp.close()
    # Node a got nothing from b all along.
    assert paths(a_port) == nothing


def test_a_node_that_does_not_share_renders_what_it_gets_and_sends_one_by_one(
    make_server: Callable[..., ServerProcess], redis: RedisServer
) -> None:
    """``share_rendered = false`` on b: b renders a's runs itself though a shipped lines of
    the same rendering, and a renders b's messages, which come one by one."""
    a, a_port = node(make_server, redis, "a")
    b, b_port = node(make_server, redis, "b", share=False)
    sender = member(a, "sender", (), "room")
    # a renders for a member of its own (kept open: a closed client leaves the room), and
    # sends those lines with the messages.
    watcher = member(a, "watcher", (), "room")
    on_b = member(b, "onb", (), "room")
    knows(sender, "room", ["onb"])
    knows(on_b, "room", ["sender"])
    before = paths(b_port)
    burst(sender, "room", "a")
    raw_lines(watcher, "sender", BURST)
    raw_lines(on_b, "sender", BURST)
    assert moved(before, paths(b_port)) == {"shipped": 0, "rendered": BURST, "events": 0}
    before = paths(a_port)
    burst(on_b, "room", "b")
    raw_lines(sender, "onb", BURST)
    assert moved(before, paths(a_port)) == {"shipped": 0, "rendered": BURST, "events": 0}


CPU_PARTS = ("publish", "commands", "stream")


def cluster_cpu(port: int) -> dict[str, float]:
    """The node's CPU seconds of its own cluster work by part, from its /metrics."""
    found = samples(get(f"http://127.0.0.1:{port}/metrics")[2])
    return {
        part: found[("chatserver_cluster_cpu_seconds_total", (("part", part),))]
        for part in CPU_PARTS
    }


def process_cpu_seconds(server: ServerProcess) -> float:
    """The server process's CPU time (user and system), from /proc."""
    assert server.proc is not None
    fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_each_node_counts_the_cpu_of_its_own_cluster_work_by_part(
    make_server: Callable[..., ServerProcess], redis: RedisServer
) -> None:
    a, a_port = node(make_server, redis, "a")
    b, b_port = node(make_server, redis, "b")
    sender = member(a, "sender", (), "room")
    # A member on a as well: a renders the messages and ships the lines with them.
    watcher = member(a, "watcher", (), "room")
    on_b = member(b, "onb", (), "room")
    knows(sender, "room", ["onb"])
    before_a, before_b = cluster_cpu(a_port), cluster_cpu(b_port)
    for i in range(10):
        burst(sender, "room", f"m{i}")
    raw_lines(watcher, "sender", 10 * BURST)
    raw_lines(on_b, "sender", 10 * BURST)
    after_a, after_b = cluster_cpu(a_port), cluster_cpu(b_port)
    # a made and sent the entries, and Redis's answers to them came on its commands
    # connection; b read them from its stream.
    assert after_a["publish"] > before_a["publish"]
    assert after_a["commands"] > before_a["commands"]
    assert after_b["stream"] > before_b["stream"]
    # Seconds of the process's own CPU, not of the wall clock nor another unit: all parts
    # together are within what the process has spent (/proc counts in ticks of 10 ms).
    for server, figures in ((a, after_a), (b, after_b)):
        assert all(value >= 0 for value in figures.values())
        assert sum(figures.values()) <= process_cpu_seconds(server) + 0.02
