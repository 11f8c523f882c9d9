"""The database goes away under a running server, and comes back.

PostgreSQL stopped (a private server of each test's own), or SQLite's disk full (the server's
file size limit set to one byte): logins and registrations are refused on every protocol
with a message that says to try later; chat goes on, its history waiting in memory up to
``[chat] history_unstored_limit``; past it each message is refused and its sender told, and
what was refused reached nobody; when the database is back, everything recovers by itself and
every message that was acknowledged (echo-message) is stored.
"""

from __future__ import annotations

import base64
import re
import resource
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.hostile.clients import IrcUser, LineUser, XmppClient, close_all, local
from tests.support.postgres import BIN_DIR, MISSING_REASON, PostgresServer
from tests.support.procs import set_file_size_limit
from tests.support.server import LineClient, ServerProcess

pytestmark = pytest.mark.timeout(180)

PASSWORD = "outage-secret-pw"
UNAVAILABLE = "database is unavailable"


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of the test's own: it is stopped half-way."""
    if BIN_DIR is None:
        pytest.skip(MISSING_REASON)
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    close_all()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def line_answer(client: LineUser) -> str:
    return client.expect(lambda line: line.startswith(("*** ", "!!! ")))


def irc_sasl(server: ServerProcess, nick: str, account: str, password: str) -> tuple[IrcUser, str]:
    """An IRC connection that tries SASL PLAIN before registering: (it, the 90x answer)."""
    irc = IrcUser(server.ports["irc"], nick, register=False)
    irc.send_line("CAP REQ :sasl")
    irc.send_line(f"NICK {nick}")
    irc.send_line(f"USER {nick} 0 * :{nick}")
    irc.expect(lambda line: " ACK " in line)
    irc.send_line("AUTHENTICATE PLAIN")
    irc.expect(lambda line: line.endswith("AUTHENTICATE +"))
    token = b64(f"{account}\0{account}\0{password}")
    irc.send_line(f"AUTHENTICATE {token}")
    answer = irc.expect(lambda line: re.search(r" 90[4-7] | 903 ", line) is not None)
    return irc, answer


# -- logins and registrations --------------------------------------------------------------


def test_logins_and_registrations_are_refused_clearly_while_postgresql_is_down(
    own_postgres: PostgresServer, make_server: Callable[..., ServerProcess]
) -> None:
    server = make_server(
        protocols=("line", "irc", "xmpp"),
        overrides={"storage": {"backend": "postgresql", "dsn": own_postgres.new_database()}},
    )
    server.create_account("alice", PASSWORD)
    own_postgres.stop()

    # Line chat: /identify and /register say what is wrong and that it is worth retrying.
    line = LineUser(server.ports["line"], "carol")
    line.send_line(f"/identify alice {PASSWORD}")
    answer = line_answer(line)
    assert answer.startswith("!!! ") and UNAVAILABLE in answer and "try again" in answer
    line.send_line(f"/register {PASSWORD}")
    answer = line_answer(line)
    assert answer.startswith("!!! ") and UNAVAILABLE in answer

    # IRC: SASL fails with 904 saying to try again; registration and NickServ say why.
    irc, answer = irc_sasl(server, "visitor", "alice", PASSWORD)
    assert " 904 " in answer and "try again" in answer, answer
    irc.send_line("CAP END")
    irc.expect(lambda line: " 001 " in line)
    dave = IrcUser(server.ports["irc"], "dave")
    dave.send_line("CAP REQ :draft/account-registration")
    dave.send_line(f"REGISTER * * {PASSWORD}")
    fail = dave.expect(lambda line: " REGISTER " in line)
    assert "FAIL REGISTER TEMPORARILY_UNAVAILABLE" in fail and UNAVAILABLE in fail, fail
    dave.send_line(f"PRIVMSG NickServ :IDENTIFY alice {PASSWORD}")
    notice = dave.expect(lambda line: "NOTICE dave" in line and "IDENTIFY" in line)
    assert UNAVAILABLE in notice, notice

    # XMPP: SASL's temporary failure; in-band registration's "wait" error.
    xmpp = XmppClient(server.ports["xmpp"])
    failure = xmpp.auth_plain("alice", PASSWORD)
    assert local(failure) == "failure"
    assert next(local(child) for child in failure) == "temporary-auth-failure"
    assert "try again" in (failure.findtext("{*}text") or "")
    newcomer = XmppClient(server.ports["xmpp"])
    answer = newcomer.register("erin", PASSWORD)
    assert answer.get("type") == "error"
    error = answer.find("{*}error")
    assert error is not None and error.get("type") == "wait"
    assert next(local(child) for child in error) == "resource-constraint"
    assert UNAVAILABLE in (error.findtext("{*}text") or "")

    own_postgres.start()
    # Everything works again by itself: the same logins, on each protocol.
    deadline = time.monotonic() + 30
    while True:
        line.send_line(f"/identify alice {PASSWORD}")
        if "now logged in as alice" in line_answer(line):
            break
        assert time.monotonic() < deadline, "no login after PostgreSQL came back"
        time.sleep(0.5)
    _, answer = irc_sasl(server, "visitor2", "alice", PASSWORD)
    assert " 903 " in answer, answer
    assert local(XmppClient(server.ports["xmpp"]).auth_plain("alice", PASSWORD)) == "success"
    assert newcomer.register("erin", PASSWORD).get("type") == "result"


# -- messages past the limit, on each protocol --------------------------------------------


def test_past_the_limit_each_protocol_refuses_its_senders_message_and_no_one_receives_it(
    own_postgres: PostgresServer, make_server: Callable[..., ServerProcess]
) -> None:
    import psycopg

    dsn = own_postgres.new_database()
    server = make_server(
        protocols=("line", "irc", "xmpp"),
        overrides={
            "storage": {"backend": "postgresql", "dsn": dsn},
            "chat": {"history_unstored_limit": 3},
        },
    )
    server.create_account("xbob", PASSWORD)
    xmpp = XmppClient(server.ports["xmpp"])
    xmpp.login("xbob", PASSWORD, "r")
    xmpp.send("<presence/>")
    xmpp.join_room("pit", "xbob")
    line = LineUser(server.ports["line"], "lina")
    line.join("pit")
    irc = IrcUser(server.ports["irc"], "ira")
    irc.join("#pit")
    own_postgres.stop()

    # Three messages wait for the database: delivered as usual.
    for text in ("one", "two", "three"):
        line.send_line(text)
        irc.expect(f"PRIVMSG #pit :{text}")
    # Once a write has failed, the limit holds: each protocol's sender is told, in its terms.
    time.sleep(2.5)
    line.send_line("four")
    refusal = line_answer(line)
    assert refusal.startswith("!!! error: ") and UNAVAILABLE in refusal, refusal
    xmpp.send(
        "<message to='pit@conference.localhost' type='groupchat' id='m5'>"
        "<body>five</body></message>"
    )
    error = xmpp.expect(lambda el: el.get("id") == "m5" and el.get("type") == "error")
    condition = error.find("{*}error")
    assert condition is not None and condition.get("type") == "wait"
    assert next(local(child) for child in condition) == "resource-constraint"
    irc.send_line("PRIVMSG #pit :six")
    fail = irc.expect(lambda line: " FAIL " in line)
    assert "FAIL PRIVMSG TEMPORARILY_UNAVAILABLE" in fail and UNAVAILABLE in fail, fail
    # What was refused reached no one.
    irc.sync()
    line.sync()
    xmpp.ping()
    heard = " ".join([*irc.seen, *line.seen])
    assert not re.search(r"\b(four|five|six)\b", heard), heard

    own_postgres.start()
    # Messages go again once the waiting ones are written, without anyone doing anything.
    deadline = time.monotonic() + 30
    while True:
        irc.send_line("PRIVMSG #pit :again")
        irc.sync("after-again")
        if not any(" FAIL PRIVMSG " in line for line in irc.seen[-3:]):
            break
        assert time.monotonic() < deadline, irc.seen[-3:]
        time.sleep(0.5)

    def read() -> set[str]:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            return {text for (text,) in conn.execute("SELECT text FROM history")}

    stored = wait_stored(read, {"one", "two", "three", "again"})
    assert {"one", "two", "three", "again"} <= stored
    assert not stored & {"four", "five", "six"}


# -- chat under load while the database is away --------------------------------------------


@dataclass
class Load:
    """What happened to a steady stream of room messages from one IRC sender."""

    sent: list[str] = field(default_factory=list)
    # Text -> msgid of the sender's echo: the server's acknowledgement.
    acknowledged: dict[str, str] = field(default_factory=dict)
    # Texts the server refused, with the refusal's description.
    refused: dict[str, str] = field(default_factory=dict)
    # Texts another member of the room received.
    delivered: set[str] = field(default_factory=set)

    def summary(self) -> str:
        return (
            f"sent {len(self.sent)}, acknowledged {len(self.acknowledged)},"
            f" refused {len(self.refused)}, delivered {len(self.delivered)}"
        )


def run_load(
    server: ServerProcess,
    *,
    away: Callable[[], None],
    back: Callable[[], None],
    rate: float = 20.0,
    before: float = 2.0,
    outage: float = 10.0,
    after: float = 3.0,
) -> Load:
    """``rate`` messages a second to #load from an IRC client with echo-message and
    labeled-response (each answer, echo or FAIL, names its message), with a line member of
    the room counting what it receives; ``away()`` after ``before`` seconds, ``back()``
    ``outage`` seconds later, and ``after`` seconds more of load."""
    load = Load()
    sender = IrcUser(server.ports["irc"], "loader", register=False)
    sender.send_line("CAP REQ :echo-message labeled-response message-tags batch")
    sender.send_line("NICK loader")
    sender.send_line("USER loader 0 * :loader")
    sender.expect(lambda line: " ACK " in line)
    sender.send_line("CAP END")
    sender.expect(lambda line: " 001 " in line)
    sender.join("#load")
    watcher = LineUser(server.ports["line"], "watcher")
    watcher.join("load")

    def on_sender(line: str) -> None:
        tags = dict(
            part.split("=", 1) if "=" in part else (part, "")
            for part in (line[1:].split(" ", 1)[0].split(";") if line.startswith("@") else [])
        )
        label = tags.get("label")
        if label is None:
            return
        if " PRIVMSG #load :" in line:
            load.acknowledged[label] = tags["msgid"]
        elif " FAIL PRIVMSG " in line:
            load.refused[label] = line.rsplit(" :", 1)[-1]

    def on_watcher(line: str) -> None:
        found = re.search(r"\b(load-\d+)$", line)
        if found:
            load.delivered.add(found.group(1))

    def pump(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for client, handle in ((sender, on_sender), (watcher, on_watcher)):
                try:
                    while True:
                        handle(client.read_line(timeout=0.001))
                except TimeoutError:
                    pass

    start = time.monotonic()
    phases = [(before, away), (before + outage, back), (before + outage + after, None)]
    n = 0
    for until, then in phases:
        while time.monotonic() - start < until:
            text = f"load-{n}"
            n += 1
            load.sent.append(text)
            sender.send_line(f"@label={text} PRIVMSG #load :{text}")
            pump(1 / rate)
        if then is not None:
            then()
    # Every message has its answer, and the watcher has what it will get.
    sender.sync("load-done")
    pump(1.0)
    watcher.sync()
    pump(0.5)
    return load


def check_load(load: Load, stored: set[str]) -> None:
    print(load.summary(), f"stored {len(stored & set(load.acknowledged.values()))}")
    # Each message got exactly one answer: an echo or a refusal.
    assert set(load.acknowledged) | set(load.refused) == set(load.sent), load.summary()
    assert not set(load.acknowledged) & set(load.refused)
    # The bound was reached during the outage, and the refusals said why.
    assert load.refused, load.summary()
    assert all(UNAVAILABLE in why for why in load.refused.values()), load.refused
    # What was acknowledged reached the room, and what was refused reached nobody.
    assert load.delivered == set(load.acknowledged), load.summary()
    # Nothing acknowledged is lost: it is all in the database now.
    missing = set(load.acknowledged.values()) - stored
    assert not missing, f"{len(missing)} acknowledged messages not stored; {load.summary()}"


def wait_stored(read: Callable[[], set[str]], wanted: set[str], timeout: float = 30) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            stored = read()
        except Exception:  # the database may still be starting
            stored = set()
        if wanted <= stored or time.monotonic() > deadline:
            return stored
        time.sleep(0.5)


def test_nothing_acknowledged_is_lost_when_postgresql_stops_for_ten_seconds(
    own_postgres: PostgresServer, make_server: Callable[..., ServerProcess]
) -> None:
    import psycopg

    dsn = own_postgres.new_database()
    server = make_server(
        protocols=("line", "irc"),
        overrides={
            "storage": {"backend": "postgresql", "dsn": dsn},
            # 20 messages a second for 10 s pass this bound half-way through the outage.
            "chat": {"history_unstored_limit": 100},
            "irc": {"flood_burst": 0},
        },
    )
    load = run_load(server, away=own_postgres.stop, back=own_postgres.start)

    def read() -> set[str]:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            return {msgid for (msgid,) in conn.execute("SELECT id FROM history")}

    check_load(load, wait_stored(read, set(load.acknowledged.values())))
    log = server.log()
    assert "history cannot be written" in log and "history written again" in log


def test_nothing_acknowledged_is_lost_when_the_sqlite_disk_is_full_for_ten_seconds(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(
        protocols=("line", "irc"),
        overrides={"chat": {"history_unstored_limit": 100}, "irc": {"flood_burst": 0}},
    )
    assert server.proc is not None
    pid = server.proc.pid
    limit = resource.prlimit(pid, resource.RLIMIT_FSIZE)

    def full() -> None:
        # The server (and its history writer) cannot write past the first byte of any file:
        # the disk is full for it.
        set_file_size_limit(pid, 1)

    def not_full() -> None:
        set_file_size_limit(pid, limit[0])

    load = run_load(server, away=full, back=not_full)
    db = Path(server.data_dir) / "chatserver.db"

    def read() -> set[str]:
        with sqlite3.connect(db, timeout=5) as conn:
            return {msgid for (msgid,) in conn.execute("SELECT id FROM history")}

    check_load(load, wait_stored(read, set(load.acknowledged.values())))


def test_with_the_sqlite_disk_full_a_login_still_works_and_a_registration_is_refused(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(protocols=("line",))
    server.create_account("alice", PASSWORD)
    assert server.proc is not None
    pid = server.proc.pid
    limit = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    set_file_size_limit(pid, 1)
    try:
        line = LineUser(server.ports["line"], "carol")
        # Reading the account needs no write.
        line.send_line(f"/identify alice {PASSWORD}")
        assert "now logged in as alice" in line_answer(line)
        other = LineClient(server.ports["line"])
        other.expect("*** Choose a nick:")
        other.send("frank")
        other.expect("*** You are frank.")
        other.send(f"/register {PASSWORD}")
        answer = other.expect(lambda line: line.startswith(("*** ", "!!! ")))
        assert answer.startswith("!!! ") and UNAVAILABLE in answer, answer
    finally:
        set_file_size_limit(pid, limit[0])
    deadline = time.monotonic() + 20
    while True:
        other.send(f"/register {PASSWORD}")
        answer = other.expect(lambda line: line.startswith(("*** ", "!!! ")))
        if "frank is now registered" in answer:
            break
        assert time.monotonic() < deadline, answer
        time.sleep(0.5)
    other.close()
