"""``chatserver run`` on the postgresql backend: an account, a registered room and a
conversation between line chat and IRC survive a restart of the server, read back from the
private PostgreSQL of the test run; and a server whose database cannot be reached refuses to
start and says why."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.postgres import BIN_DIR, MISSING_REASON, PostgresServer
from tests.support.server import LineClient, ServerProcess, free_port

pytestmark = pytest.mark.timeout(120)

PASSWORD = "pg-secret-pw"


def line_user(server: ServerProcess, nick: str) -> LineClient:
    client = LineClient(server.ports["line"])
    client.expect("*** Choose a nick:")
    client.send(nick)
    client.expect(f"*** You are {nick}.")
    return client


def irc_user(server: ServerProcess, nick: str) -> LineClient:
    client = LineClient(server.ports["irc"])
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick}")
    client.expect(" 001 ")
    return client


def test_accounts_rooms_and_history_survive_a_restart(
    postgres: PostgresServer, make_server: object
) -> None:
    dsn = postgres.new_database()
    server: ServerProcess = make_server(  # type: ignore[operator]
        protocols=("line", "irc"),
        overrides={"storage": {"backend": "postgresql", "dsn": dsn}},
    )
    alice = line_user(server, "alice")
    alice.send(f"/register {PASSWORD}")
    alice.expect("*** alice is now registered")
    alice.send("/join #pgroom")
    alice.expect("*** you joined #pgroom")
    alice.send("/register-room")
    alice.expect("*** #pgroom is now registered")
    alice.send("/topic stored in PostgreSQL")
    alice.expect("stored in PostgreSQL")

    bob = irc_user(server, "bob")
    bob.send("JOIN #pgroom")
    bob.expect(" 366 ")
    alice.send("hello from line chat")
    assert "PRIVMSG #pgroom :hello from line chat" in bob.expect("hello from line chat")
    bob.send("PRIVMSG #pgroom :hello from IRC")
    alice.expect("hello from IRC")
    for client in (alice, bob):
        client.send("/quit" if client is alice else "QUIT :bye")
        client.read_until_closed()

    server.restart()
    # The account: a wrong password is refused, the right one logs in.
    again = line_user(server, "visitor")
    again.send("/identify alice wrong-password")
    again.expect("!!! ")
    again.send(f"/identify alice {PASSWORD}")
    again.expect("now logged in as alice")
    # The registered room kept its topic, and its history came back from the database.
    carol = irc_user(server, "carol")
    carol.send("JOIN #pgroom")
    topic = carol.expect(" 332 ")
    assert topic.endswith(":stored in PostgreSQL")
    carol.send("CAP REQ :draft/chathistory batch server-time message-tags")
    carol.send("CHATHISTORY LATEST #pgroom * 10")
    carol.expect("hello from line chat")
    carol.expect("hello from IRC")
    for client in (again, carol):
        client.close()
    # No operation of the store failed along the way.
    assert not re.search(r"PostgreSQL store \S+: \w+ failed", server.log())


def test_an_unreachable_database_stops_the_start_with_a_clear_message(
    make_server: object, tmp_path: object
) -> None:
    dsn = f"postgresql://chat:hidden@127.0.0.1:{free_port()}/chat"
    server = ServerProcess(
        tmp_path / "s",  # type: ignore[operator]
        protocols=("line",),
        overrides={"storage": {"backend": "postgresql", "dsn": dsn}},
    )
    with pytest.raises(RuntimeError) as caught:
        server.start()
    message = str(caught.value)
    assert "cannot start" in message
    assert "cannot be used" in message
    assert "hidden" not in message


def test_logins_fail_clearly_while_postgresql_is_down_and_work_once_it_is_back(
    make_server: object,
) -> None:
    if BIN_DIR is None:
        pytest.skip(MISSING_REASON)
    # A PostgreSQL of this test's own: it is stopped half-way.
    own = PostgresServer().start()
    try:
        server: ServerProcess = make_server(  # type: ignore[operator]
            protocols=("line", "irc"),
            overrides={"storage": {"backend": "postgresql", "dsn": own.new_database()}},
        )
        alice = line_user(server, "alice")
        alice.send(f"/register {PASSWORD}")
        alice.expect("*** alice is now registered")
        alice.send("/join #up")
        alice.expect("*** you joined #up")
        bob = irc_user(server, "bob")
        bob.send("JOIN #up")
        bob.expect(" 366 ")

        own.stop()
        # Chat among users already here goes on.
        alice.send("still talking")
        bob.expect("still talking")
        # A login needs the database: refused, with a message, and nothing else breaks.
        carol = line_user(server, "carol")
        carol.send(f"/identify alice {PASSWORD}")
        assert carol.expect("!!! ").startswith("!!! error: ")

        own.start()
        # The store reconnects by itself: the same login now works.
        deadline_tries = 50
        for _ in range(deadline_tries):
            carol.send(f"/identify alice {PASSWORD}")
            answer = carol.expect(lambda line: line.startswith(("*** ", "!!! ")))
            if "now logged in as alice" in answer:
                break
        else:
            raise AssertionError(f"no login after PostgreSQL came back: {answer}")
        for client in (alice, bob, carol):
            client.close()
    finally:
        own.destroy()


def test_backup_and_restore_point_to_the_postgresql_tools(tmp_path: Path) -> None:
    config = tmp_path / "chatserver.toml"
    config.write_text('[storage]\nbackend = "postgresql"\ndsn = "postgresql://chat@127.0.0.1/x"\n')
    for command, tool in (("backup", "pg_dump"), ("restore", "pg_restore")):
        done = subprocess.run(
            [
                *(sys.executable, "-m", "chatserver", command, str(tmp_path / "copy.db")),
                *("--config", str(config), "--data-dir", str(tmp_path / "data")),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1
        assert f"{command} works on the sqlite backend; with postgresql, use {tool}" in done.stderr
