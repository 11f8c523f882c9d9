"""Flood control through the real server: a stall of the server itself does not get a client
that sends under its limit closed (nor lose its messages), and a flood of telnet commands is
a flood like any other, while a bystander is unaffected."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.hostile.clients import (
    BYSTANDER,
    IrcUser,
    LineUser,
    RawClient,
    close_all,
    local,
    xmpp_user,
)
from tests.support.server import ServerProcess

# The limit every protocol gets here: 10 per second, with a small burst and queue, so that
# what piles up during a stall of STALL seconds is well past burst and queue together.
RATE = 10.0
SEND_EVERY = 1 / (0.8 * RATE)
STALL = 1.5
MESSAGES = 32


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        Path(tmp_path_factory.mktemp("flood")),
        protocols=("line", "irc", "xmpp"),
        overrides={
            "line": {"flood_burst": 4, "flood_rate": RATE},
            "irc": {"flood_burst": 2, "flood_rate": RATE, "flood_max_queue": 3},
            "xmpp": {
                "domain": "localhost",
                "flood_burst": 4,
                "flood_rate": RATE,
                "flood_max_queue": 4,
            },
            "chat": {"address_limit_exempt": ["127.0.0.1", "127.0.0.2"]},
        },
    )
    proc.start()
    yield proc
    proc.kill()


@pytest.fixture(autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    close_all()


def send_through_a_stall(server: ServerProcess, send: Callable[[int], None]) -> None:
    """Send MESSAGES at 80% of the limit; a third of the way in, the server process stops
    for STALL seconds (what piles up meanwhile is read in one go when it runs again)."""
    assert server.proc is not None
    pid = server.proc.pid
    failures: list[BaseException] = []

    def sender() -> None:
        start = time.monotonic()
        try:
            for i in range(MESSAGES):
                time.sleep(max(0.0, start + i * SEND_EVERY - time.monotonic()))
                send(i)
        except BaseException as err:  # reported in the test's thread
            failures.append(err)

    thread = threading.Thread(target=sender)
    thread.start()
    time.sleep(MESSAGES * SEND_EVERY / 3)
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(STALL)
    finally:
        os.kill(pid, signal.SIGCONT)
    thread.join()
    assert not failures, failures


def test_irc_client_under_its_limit_survives_a_server_stall(server: ServerProcess) -> None:
    port = server.ports["irc"]
    receiver = IrcUser(port, "ircrecv", source=BYSTANDER)
    receiver.join("#stall")
    sender = IrcUser(port, "ircsend")
    sender.join("#stall")
    time.sleep(1.0)  # registration and JOIN took tokens: a full bucket to start with
    send_through_a_stall(server, lambda i: sender.send_line(f"PRIVMSG #stall :m{i}"))
    for i in range(MESSAGES):
        receiver.expect(lambda line, i=i: line.endswith(f"PRIVMSG #stall :m{i}"))
    sender.sync()
    assert not any("Excess Flood" in line for line in sender.seen)


def test_xmpp_client_under_its_limit_survives_a_server_stall(server: ServerProcess) -> None:
    port = server.ports["xmpp"]
    receiver = xmpp_user(port, "xrecv", "secret-one", source=BYSTANDER, register=True)
    sender = xmpp_user(port, "xsend", "secret-two", source=BYSTANDER, register=True)
    time.sleep(1.0)
    send_through_a_stall(
        server,
        lambda i: sender.send(
            f"<message to='xrecv@localhost' type='chat'><body>m{i}</body></message>"
        ),
    )
    bodies: list[str] = []
    while len(bodies) < MESSAGES:
        el = receiver.expect(lambda el: local(el) == "message")
        bodies.append(el.findtext("{jabber:client}body"))
    assert bodies == [f"m{i}" for i in range(MESSAGES)]
    sender.ping()
    assert sender.stream_error is None


def test_line_client_under_its_limit_survives_a_server_stall(server: ServerProcess) -> None:
    port = server.ports["line"]
    receiver = LineUser(port, "linerecv", source=BYSTANDER)
    receiver.join("stall")
    sender = LineUser(port, "linesend")
    sender.join("stall")
    time.sleep(1.0)
    send_through_a_stall(server, lambda i: sender.send_line(f"m{i}"))
    for i in range(MESSAGES):
        receiver.expect(lambda line, i=i: line.endswith(f"<linesend> m{i}"))
    sender.sync()
    assert not any("too fast" in line for line in sender.seen)


def test_a_telnet_command_flood_is_a_flood(server: ServerProcess) -> None:
    port = server.ports["line"]
    alice = LineUser(port, "alice", source=BYSTANDER)
    alice.join("quiet")
    bob = LineUser(port, "bob", source=BYSTANDER)
    bob.join("quiet")
    flooder = LineUser(port, "nopper")
    start = time.monotonic()
    try:
        for _ in range(200):
            flooder.send(b"\xff\xf1" * 32_768)
    except OSError:
        pass  # closed while still sending
    lines = flooder.read_until_closed(timeout=5)
    took = time.monotonic() - start
    assert any("Excess flood" in line for line in lines), lines[-5:]
    assert took < 5
    # Neither the flood nor its end touched the bystanders.
    for i in range(5):
        alice.send_line(f"still here {i}")
        time.sleep(0.2)  # within the test's limit of 10 lines a second
        sent = time.monotonic()
        bob.expect(lambda line, i=i: line.endswith(f"<alice> still here {i}"), timeout=2)
        assert time.monotonic() - sent < 0.5


def test_telnet_negotiation_is_still_answered(server: ServerProcess) -> None:
    client = RawClient(server.ports["line"])
    # What a telnet client sends first: a few option requests (each refused, once).
    client.send(b"\xff\xfd\x03\xff\xfb\x18\xff\xfb\x1f\xff\xfd\x03")
    data = client.drain(0.5)
    assert b"\xff\xfc\x03" in data and b"\xff\xfe\x18" in data and b"\xff\xfe\x1f" in data
    assert data.count(b"\xff\xfc\x03") == 1
    client.send_line("negotiator")
    client.expect("*** You are negotiator.")
