"""A node that starts takes clients once it knows the other nodes' users and rooms.

Before that, a room joined on it would look empty there, and its first messages would go
to no other node: the members elsewhere would miss them.  The other node is paused
(SIGSTOP) while the new one starts, so that its answer comes late on purpose.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tests.cluster.test_cluster import irc
from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(120)

Node = Callable[..., ServerProcess]


def joined(client: LineClient, nick: str, room: str) -> str:
    """Join ``room``; returns the member list the join showed (its 353 lines)."""
    client.send(f"JOIN {room}")
    names = []
    while True:
        line = client.read_line(10)
        if f" 353 {nick} " in line:
            names.append(line.rsplit(" :", 1)[1])
        if f" 366 {nick} {room} " in line:
            return " ".join(names)


def whois_host(client: LineClient, nick: str, target: str) -> str:
    """``target``'s host as WHOIS shows it to ``client`` (asked again until ``client``'s
    node knows ``target``)."""
    deadline = time.monotonic() + 10
    while True:
        client.send(f"WHOIS {target}")
        line = client.expect(lambda t: f" 311 {nick} {target} " in t or f" 401 {nick} " in t)
        if " 311 " in line:
            client.expect(f" 318 {nick} ")
            return line.split()[5]
        assert time.monotonic() < deadline, line
        time.sleep(0.1)


@contextmanager
def paused(server: ServerProcess, seconds: float | None) -> Iterator[None]:
    """``server`` stopped (SIGSTOP) for the block, and continued ``seconds`` after it
    began (None: at its end), from a timer: the block may wait on the paused server."""
    assert server.proc is not None
    pid = server.proc.pid
    os.kill(pid, signal.SIGSTOP)
    timer = None if seconds is None else threading.Timer(seconds, os.kill, (pid, signal.SIGCONT))
    if timer is not None:
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
        os.kill(pid, signal.SIGCONT)


def test_a_new_node_waits_for_the_others_state_before_it_takes_clients(make_node: Node) -> None:
    a = make_node("a", protocols=("irc",), lease=10.0)
    alice = irc(a, "alice")
    assert joined(alice, "alice", "#dev") == "@alice"
    with paused(a, 3.0):
        began = time.monotonic()
        c = make_node("c", protocols=("irc",), lease=10.0)
        waited = time.monotonic() - began
        # Joined at once: c listened only once the paused node had answered.
        wc = irc(c, "wc")
        assert joined(wc, "wc", "#dev").split() == ["@alice", "wc"]
    assert waited >= 2.5, waited
    wc.send("PRIVMSG #dev :first words on c")
    assert alice.expect("first words on c").startswith(":wc!")


def test_a_node_that_does_not_answer_keeps_a_new_one_waiting_two_leases_at_most(
    make_node: Node,
) -> None:
    a = make_node("a", protocols=("irc",), lease=10.0)
    alice = irc(a, "alice")
    joined(alice, "alice", "#dev")
    with paused(a, None):
        began = time.monotonic()
        # Its own lease is 2 s: it waits 4 s for a's state, then takes clients.
        c = make_node("c", protocols=("irc",), lease=2.0)
        waited = time.monotonic() - began
        assert 3.5 <= waited < 15, waited
        assert "no state yet from node(s) a; taking clients without it" in c.log()
    # Once a answers, c knows its rooms.
    wc = irc(c, "wc")
    deadline = time.monotonic() + 10
    while True:
        wc.send("NAMES #dev")
        names = [wc.expect(lambda line: " 353 wc " in line or " 366 wc " in line)]
        while " 366 wc " not in names[-1]:
            names.append(wc.read_line())
        if "@alice" in names[0]:
            break
        assert time.monotonic() < deadline, names
        time.sleep(0.1)
    assert joined(wc, "wc", "#dev").split() == ["@alice", "wc"]
    wc.send("PRIVMSG #dev :late words on c")
    assert alice.expect("late words on c").startswith(":wc!")


def test_a_node_whose_cloak_secret_differs_from_the_clusters_is_refused(make_node: Node) -> None:
    make_node("a", protocols=("irc",))
    with pytest.raises(RuntimeError, match="server exited with 1") as refused:
        make_node("b", protocols=("irc",), overrides={"chat": {"cloak_secret": "another one"}})
    assert "cloak_secret differs from the other nodes'" in str(refused.value)


def test_one_address_has_one_cloak_on_every_node_and_a_ban_on_it_holds_everywhere(
    make_node: Node,
) -> None:
    a = make_node("a", protocols=("irc",))
    b = make_node("b", protocols=("irc",))
    op = irc(a, "op")
    joined(op, "op", "#dev")
    guest = irc(b, "guest")
    host = whois_host(op, "op", "guest")
    assert whois_host(guest, "guest", "op") == host
    assert host.endswith(".cloak")
    # The operator on node a bans the cloak; the user on node b, from the same address,
    # is kept out.
    op.send(f"MODE #dev +b *!*@{host}")
    op.expect(f"MODE #dev +b *!*@{host}")
    deadline = time.monotonic() + 10
    while True:
        guest.send("JOIN #dev")
        answer = guest.expect(lambda line: " 474 " in line or " JOIN " in line)
        if " 474 guest #dev " in answer:
            break
        # Joined before node b had the ban: out again, and once more.
        guest.send("PART #dev")
        assert time.monotonic() < deadline, answer
        time.sleep(0.2)
