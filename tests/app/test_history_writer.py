"""The SQLite history writer process, through the real server: history is visible as soon as it
is said, a writer killed under load loses and doubles nothing, what a writer received outlives
the server killed, and no writer outlives its server."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hostile.clients import MUC_DOMAIN, IrcUser, XmppClient, irc_command, local
from tests.support.procs import age, alive, history_writers
from tests.support.server import ServerProcess

pytestmark = pytest.mark.timeout(120)

PASSWORD = "writer-secret"
CAPS = "batch server-time message-tags draft/chathistory"
NS_MAM = "urn:xmpp:mam:2"
NS_CLIENT = "jabber:client"


def writer_of(server: ServerProcess, timeout: float = 10.0) -> int:
    """The pid of the server's one history writer, once it runs."""
    assert server.proc is not None
    deadline = time.monotonic() + timeout
    while True:
        writers = history_writers(server.proc.pid)
        if len(writers) == 1:
            return writers[0]
        assert len(writers) < 2, writers
        assert time.monotonic() < deadline, "no history writer"
        time.sleep(0.02)


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} is still there"
        time.sleep(0.02)


def history_client(server: ServerProcess, nick: str) -> IrcUser:
    irc = IrcUser(server.ports["irc"], nick, register=False)
    irc.send_line(f"CAP REQ :{CAPS}")
    irc.send_line(f"NICK {nick}")
    irc.send_line(f"USER {nick} 0 * :{nick}")
    irc.send_line("CAP END")
    irc.expect(lambda line: f" 001 {nick} " in line)
    irc.sync("registered")
    return irc


def chathistory(irc: IrcUser, channel: str, limit: int = 100) -> list[str]:
    """The texts CHATHISTORY LATEST gives, oldest first."""
    start = len(irc.seen)
    irc.send_line(f"CHATHISTORY LATEST {channel} * {limit}")
    irc.expect(
        lambda line: (
            irc_command(line)[0] == "FAIL"
            or (irc_command(line)[0] == "BATCH" and irc_command(line)[1][0].startswith("-"))
        )
    )
    texts = []
    for line in irc.seen[start:]:
        command, params = irc_command(line)
        if command == "FAIL":
            raise AssertionError(line)
        if command == "PRIVMSG" and line.startswith("@") and "batch=" in line.split(" ")[0]:
            texts.append(params[-1])
    return texts


def stored_texts(server: ServerProcess, room: str) -> list[str]:
    """Every stored text of the room ``room`` (its key: no IRC ``#``), by a connection of the
    test's own."""
    db = Path(server.data_dir) / "chatserver.db"
    with sqlite3.connect(db, timeout=5) as conn:
        rows = conn.execute("SELECT text FROM history WHERE target = ? ORDER BY ts", (room,))
        return [text for (text,) in rows]


def test_the_server_starts_one_writer_and_a_stop_ends_it(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(protocols=("irc",))
    writer = writer_of(server)
    assert server.stop() == 0
    wait_gone(writer)


def test_chathistory_right_after_sending_has_every_message(
    make_server: Callable[..., ServerProcess],
) -> None:
    # Written every 30 s: each query finds the messages still waiting to be written.
    server = make_server(
        protocols=("irc",),
        overrides={"chat": {"history_flush_interval": 30}, "irc": {"flood_burst": 0}},
    )
    alice = history_client(server, "alice")
    alice.join("#now")
    for n in range(3):
        said = [f"round {n} line {i}" for i in range(20)]
        for text in said:
            alice.send_line(f"PRIVMSG #now :{text}")
        # No wait: the query comes right behind the messages on the same connection.
        texts = chathistory(alice, "#now")
        assert texts[-20:] == said, texts


def test_mam_right_after_sending_has_every_message(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(
        protocols=("line", "xmpp"), overrides={"chat": {"history_flush_interval": 30}}
    )
    server.create_account("xwriter", PASSWORD)
    xmpp = XmppClient(server.ports["xmpp"])
    xmpp.login("xwriter", PASSWORD, "r")
    xmpp.send("<presence/>")
    xmpp.join_room("atonce", "xwriter")
    room = f"atonce@{MUC_DOMAIN}"
    said = [f"stanza {i}" for i in range(10)]
    for i, text in enumerate(said):
        xmpp.send(f"<message to='{room}' type='groupchat' id='g{i}'><body>{text}</body></message>")
    xmpp.send(f"<iq type='set' id='q1' to='{room}'><query xmlns='{NS_MAM}' queryid='q1'/></iq>")
    found = []
    while True:
        el = xmpp.expect(
            lambda el: el.get("id") == "q1" or el.find(f"{{{NS_MAM}}}result") is not None
        )
        if local(el) == "iq":
            assert el.get("type") == "result"
            break
        found.append(el.findtext(f".//{{{NS_CLIENT}}}message/{{{NS_CLIENT}}}body"))
    assert found[-10:] == said, found


def test_a_writer_killed_under_load_is_replaced_and_nothing_is_lost_or_doubled(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(
        protocols=("irc",),
        overrides={"chat": {"history_flush_interval": 0.02}, "irc": {"flood_burst": 0}},
    )
    alice = history_client(server, "alice")
    alice.join("#load")
    killed = set()
    sent = []
    for n in range(600):
        text = f"load {n}"
        alice.send_line(f"PRIVMSG #load :{text}")
        sent.append(text)
        if n % 150 == 75:
            # Mid-stream, while batches are in flight.
            writer = writer_of(server)
            os.kill(writer, signal.SIGKILL)
            killed.add(writer)
        elif n % 150 == 149 and n < 599:
            # The next writer lives a while first: one that ends at once (within the
            # server's restart delay of a second) is another case.
            time.sleep(max(0.0, 1.5 - age(writer_of(server))))
    alice.sync("all-sent")
    # A query waits for every batch sent before it, whichever writer writes it.
    assert chathistory(alice, "#load", 100) == sent[-100:]
    assert writer_of(server) not in killed
    assert server.stop() == 0
    stored = stored_texts(server, "load")
    assert sorted(stored) == sorted(sent), (len(stored), len(sent))
    assert "starting another" in server.log()


def test_what_the_writer_received_is_stored_after_the_server_is_killed(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(
        protocols=("irc",),
        overrides={"chat": {"history_flush_interval": 0.02}, "irc": {"flood_burst": 0}},
    )
    alice = history_client(server, "alice")
    alice.join("#crash")
    alice.send_line("PRIVMSG #crash :before")
    alice.sync("before")
    writer = writer_of(server)
    # The writer is held still: what the server sends from now on waits in the pipe.
    os.kill(writer, signal.SIGSTOP)
    try:
        said = [f"in the pipe {i}" for i in range(50)]
        for text in said:
            alice.send_line(f"PRIVMSG #crash :{text}")
        alice.sync("sent")
        time.sleep(0.5)  # many flush intervals: every message is in a batch sent to the pipe
        server.kill()
    finally:
        os.kill(writer, signal.SIGCONT)
    # The writer writes what it was sent, then sees its pipe closed and exits.
    wait_gone(writer)
    assert stored_texts(server, "crash") == ["before", *said]
    server.start()
    bob = history_client(server, "bob")
    bob.join("#crash")
    assert chathistory(bob, "#crash") == ["before", *said]
    new_writer = writer_of(server)
    server.kill()
    wait_gone(new_writer)


def test_a_writer_that_dies_at_once_makes_history_wait_and_nothing_is_lost(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(
        protocols=("irc",),
        overrides={"chat": {"history_flush_interval": 0.02}, "irc": {"flood_burst": 0}},
    )
    assert server.proc is not None
    alice = history_client(server, "alice")
    alice.join("#again")
    first = writer_of(server)
    os.kill(first, signal.SIGSTOP)
    said = [f"waiting {i}" for i in range(20)]
    for text in said[:10]:
        alice.send_line(f"PRIVMSG #again :{text}")
    alice.sync("first half")
    time.sleep(0.3)  # the batches are in the stopped writer's pipe, unacknowledged
    os.kill(first, signal.SIGKILL)
    # The server may have reaped it already: nothing is left to continue then.
    with contextlib.suppress(ProcessLookupError):
        os.kill(first, signal.SIGCONT)
    # Its replacement is killed as soon as it appears: a writer that ends at once.
    deadline = time.monotonic() + 10
    while True:
        writers = [pid for pid in history_writers(server.proc.pid) if pid != first]
        if writers:
            os.kill(writers[0], signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "no second writer"
        time.sleep(0.005)
    for text in said[10:]:
        alice.send_line(f"PRIVMSG #again :{text}")
    alice.sync("second half")
    # History waits, as for a failing database, and is written once the next writer, a
    # second later, runs.
    deadline = time.monotonic() + 15
    while chathistory(alice, "#again")[-20:] != said:
        assert time.monotonic() < deadline, chathistory(alice, "#again")
        time.sleep(0.2)
    log = server.log()
    assert "ended at once" in log and "history written again" in log, log
    assert server.stop() == 0
    assert stored_texts(server, "again") == said
