"""Two real IRC client libraries against the real server: Twisted's IRCClient (in a child
process with its own reactor) and the ``irc`` package's client (in this process)."""

from __future__ import annotations

import itertools
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import irc.client
import pytest

from chatserver.passwords import hash_password
from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0
_ids = itertools.count(1)


class TwistedClient:
    """``tests/irc/twisted_irc_client.py`` in a child process: commands in, events out."""

    def __init__(self, port: int, nick: str) -> None:
        self.nick = nick
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.irc.twisted_irc_client", "127.0.0.1", str(port), nick],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.events: queue.Queue[list[str]] = queue.Queue()
        self.seen: list[list[str]] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.expect(lambda e: e[0] == "SIGNEDON")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(line.rstrip("\n").split("\t"))

    def command(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, predicate: Callable[[list[str]], bool], timeout: float = TIMEOUT) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.nick}: no such event; seen {self.seen[-15:]}")
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(event)
            if predicate(event):
                return event

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class JaracoClient:
    """The ``irc`` package's client, pumped by hand in this process."""

    def __init__(self, port: int, nick: str, **connect: Any) -> None:
        self.nick = nick
        self.reactor = irc.client.Reactor()
        self.events: list[irc.client.Event] = []
        self._next = 0
        self.reactor.add_global_handler("all_events", self._record, -10)
        self.conn = self.reactor.server().connect("127.0.0.1", port, nick, **connect)

    def _record(self, connection: Any, event: irc.client.Event) -> None:
        self.events.append(event)

    def wait(
        self, predicate: Callable[[irc.client.Event], bool], timeout: float = TIMEOUT
    ) -> irc.client.Event:
        """The first event from now on that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            while self._next < len(self.events):
                event = self.events[self._next]
                self._next += 1
                if predicate(event):
                    return event
            if time.monotonic() > deadline:
                seen = [(e.type, e.arguments) for e in self.events[-15:]]
                raise TimeoutError(f"{self.nick}: no such event; seen {seen}")
            self.reactor.process_once(0.05)

    def wait_type(self, kind: str, timeout: float = TIMEOUT) -> irc.client.Event:
        return self.wait(lambda e: e.type == kind, timeout)

    def notice_from(self, nick: str, text: str) -> irc.client.Event:
        return self.wait(
            lambda e: e.type == "privnotice" and e.source.nick == nick and text in e.arguments[0]
        )

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("clients"), protocols=("line", "irc"))
    process.start()
    yield process
    process.kill()


@pytest.fixture
def clients() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for client in made:
        client.close()


def test_twisted_and_irc_package_talk_in_a_room_and_privately(
    server: ServerProcess, clients: list[Any]
) -> None:
    n = next(_ids)
    room = f"#libs{n}"
    twisty = TwistedClient(server.ports["irc"], f"twisty{n}")
    clients.append(twisty)
    jar = JaracoClient(server.ports["irc"], f"jar{n}")
    clients.append(jar)
    jar.wait_type("welcome")
    twisty.command(f"join {room}")
    twisty.expect(lambda e: e[:2] == ["JOINED", room])
    jar.conn.join(room)
    jar.wait(lambda e: e.type == "join" and e.source.nick == jar.nick)
    twisty.expect(lambda e: e[:3] == ["USERJOINED", jar.nick, room])

    twisty.command(f"say {room} hello from twisted")
    got = jar.wait_type("pubmsg")
    assert (got.source.nick, got.target, got.arguments) == (
        twisty.nick,
        room,
        ["hello from twisted"],
    )
    jar.conn.privmsg(room, "hello from jaraco")
    assert twisty.expect(lambda e: e[0] == "PRIVMSG") == [
        "PRIVMSG",
        jar.nick,
        room,
        "hello from jaraco",
    ]
    jar.conn.action(room, "waves")
    assert twisty.expect(lambda e: e[0] == "ACTION") == ["ACTION", jar.nick, room, "waves"]
    twisty.command(f"me {room} bows")
    assert jar.wait_type("action").arguments == ["bows"]

    twisty.command(f"say {jar.nick} just between us")
    private = jar.wait_type("privmsg")
    assert (private.source.nick, private.arguments) == (twisty.nick, ["just between us"])
    jar.conn.notice(twisty.nick, "noted")
    assert twisty.expect(lambda e: e[0] == "NOTICE") == ["NOTICE", jar.nick, twisty.nick, "noted"]


def test_nickserv_register_then_identify_from_both_libraries(
    server: ServerProcess, clients: list[Any]
) -> None:
    n = next(_ids)
    nick = f"acct{n}"
    jar = JaracoClient(server.ports["irc"], nick)
    clients.append(jar)
    jar.wait_type("welcome")
    jar.conn.privmsg("NickServ", "REGISTER hunter2hunter2")
    jar.notice_from("NickServ", "registered")
    jar.conn.quit("bye")
    jar.wait_type("disconnect")

    twisty = TwistedClient(server.ports["irc"], nick)
    clients.append(twisty)
    # The nick is kept for its account: 433, and Twisted's client takes another nick itself.
    # (The client waited for its sign-on: what came before is in ``seen``.)
    assert any(
        e[0] == "LINE" and f" 433 * {nick} :Nickname is reserved" in e[1] for e in twisty.seen
    )
    assert [e[1] for e in twisty.seen if e[0] == "SIGNEDON"] == [f"{nick}_"]
    twisty.command(f"say NickServ IDENTIFY {nick} wrong-password")
    twisty.expect(lambda e: e[:2] == ["NOTICE", "NickServ"] and "invalid password" in e[-1])
    twisty.command(f"say NickServ IDENTIFY {nick} hunter2hunter2")
    twisty.expect(lambda e: e[:2] == ["NOTICE", "NickServ"] and "logged in as" in e[-1])
    twisty.command(f"raw NICK {nick}")
    twisty.expect(
        lambda e: e[0] == "LINE" and e[1].split()[1:] in (["NICK", nick], ["NICK", f":{nick}"])
    )
    twisty.command(f"raw WHOIS {nick}")
    line = twisty.expect(lambda e: e[0] == "LINE" and " 330 " in e[1])[1]
    assert line.split()[3:5] == [nick, nick]


def test_sasl_plain_login_with_the_irc_package(server: ServerProcess, clients: list[Any]) -> None:
    n = next(_ids)
    account = f"sasl{n}"
    first = JaracoClient(server.ports["irc"], account)
    clients.append(first)
    first.wait_type("welcome")
    first.conn.privmsg("NickServ", "REGISTER saslpass123")
    first.notice_from("NickServ", "registered")
    first.conn.quit("bye")
    first.wait_type("disconnect")

    jar = JaracoClient(server.ports["irc"], f"other{n}", password="saslpass123", sasl_login=account)
    clients.append(jar)
    logged_in = jar.wait_type("loggedin")  # 900, before the welcome
    assert logged_in.arguments[1] == account
    jar.wait_type("saslsuccess")
    welcome = jar.wait_type("welcome")
    assert welcome.target == f"other{n}"
    jar.conn.whois(f"other{n}")
    assert jar.wait(lambda e: e.type == "whoisaccount").arguments[:2] == [f"other{n}", account]

    bad = JaracoClient(server.ports["irc"], f"bad{n}", password="wrong-pass", sasl_login=account)
    clients.append(bad)
    assert bad.wait_type("login_failed")
    bad.wait_type("welcome")


def test_chathistory_with_the_irc_package(server: ServerProcess, clients: list[Any]) -> None:
    n = next(_ids)
    room = f"#hist{n}"
    speaker = TwistedClient(server.ports["irc"], f"speaker{n}")
    clients.append(speaker)
    speaker.command(f"join {room}")
    speaker.expect(lambda e: e[:2] == ["JOINED", room])
    jar = JaracoClient(server.ports["irc"], f"reader{n}")
    clients.append(jar)
    jar.wait_type("welcome")
    jar.conn.cap("REQ", "batch", "server-time", "message-tags", "draft/chathistory")
    jar.wait(lambda e: e.type == "cap" and e.arguments[0] == "ACK")
    jar.conn.join(room)
    jar.wait_type("endofnames")
    for i in range(5):
        speaker.command(f"say {room} line {i}")
    # Seen live first, so all five are in the history (flood control may space them out).
    jar.wait(lambda e: e.type == "pubmsg" and e.arguments == ["line 4"])
    jar.conn.send_raw(f"CHATHISTORY LATEST {room} * 3")
    start = jar.wait_type("batch")
    # The irc package takes the reference tag for the target.
    assert start.target.startswith("+") and start.arguments == ["chathistory", room]
    batch_id = start.target[1:]
    got = [jar.wait_type("pubmsg") for _ in range(3)]
    assert [e.arguments[0] for e in got] == ["line 2", "line 3", "line 4"]
    for event in got:
        tags = {t["key"]: t["value"] for t in event.tags}
        assert tags["batch"] == batch_id and tags["msgid"] and tags["time"].endswith("Z")
    assert jar.wait_type("batch").target == "-" + batch_id


def test_oper_from_the_config_file(tmp_path: Path, clients: list[Any]) -> None:
    process = ServerProcess(tmp_path, protocols=("irc",))
    stored = hash_password("operator-secret")
    with open(process.config_path, "a") as config:
        config.write(f'\n[[operators]]\nname = "boss"\npassword = "{stored}"\n')
    process.start()
    try:
        jar = JaracoClient(process.ports["irc"], "wannabe")
        clients.append(jar)
        jar.wait_type("welcome")
        jar.conn.oper("boss", "wrong")
        assert jar.wait_type("passwdmismatch")
        jar.conn.oper("boss", "operator-secret")
        assert jar.wait_type("youreoper")
        jar.conn.whois("wannabe")
        assert jar.wait_type("whoisoperator")
    finally:
        process.kill()
