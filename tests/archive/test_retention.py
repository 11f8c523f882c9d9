"""Retention and purging through the real server: ``[history] retention`` deletes room and
private messages older than it (and nothing newer), at start and hourly; ``chatserver history
purge`` deletes a room's, an account's or everything older than a date; deleting an account
deletes its private archive and nobody else's."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.matrix.clients import IrcPeer
from tests.support.server import ServerProcess

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

DAY = 86400.0
PASSWORD = "archive-secret"
CAPS = ("batch", "message-tags", "server-time", "draft/chathistory")
COLUMNS = "id, target, ts, nick, ident, host, account, realname, kind, text, tags"


def seed(db: Path, now: float) -> None:
    """Old and new messages in room ``keep`` and in the archives of alice and bob."""
    conn = sqlite3.connect(db)
    with conn:
        for n, age in enumerate((10, 5, 0.001)):
            ts = now - age * DAY
            conn.execute(
                f"INSERT INTO history ({COLUMNS}) VALUES (?, 'keep', ?, 'x', 'x', 'h', NULL,"
                " '', 'privmsg', ?, '[]')",
                (f"room{n}", ts, f"room message {n}"),
            )
            for owner, peer in (("alice", "bob"), ("bob", "alice")):
                conn.execute(
                    f"INSERT INTO private_history (owner, peer, offline, {COLUMNS}, stanza)"
                    " VALUES (?, ?, 0, ?, 'bob', ?, 'alice', 'alice', 'h', 'alice', '',"
                    " 'privmsg', ?, '[]', NULL)",
                    (owner, peer, f"pm{n}", ts, f"private {n}"),
                )
    conn.close()


def count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "chatserver",
            *args,
            "--config",
            str(server.config_path),
            "--data-dir",
            str(server.data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def chathistory(peer: IrcPeer, *args: str) -> list[str]:
    peer.send("CHATHISTORY " + " ".join(args))
    start = peer.expect(lambda m: m.command == "BATCH" and m.params[0].startswith("+"))
    texts = []
    while True:
        m = peer.expect(lambda m: True)
        if m.command == "BATCH" and m.params[0] == "-" + start.params[0][1:]:
            return texts
        if m.command == "PRIVMSG":
            texts.append(m.last)


def test_retention_deletes_what_is_older_and_nothing_else(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "s", protocols=("irc",))
    server.start()
    server.create_account("alice", PASSWORD)
    server.create_account("bob", PASSWORD)
    server.stop()
    db = server.data_dir / "chatserver.db"
    seed(db, time.time())
    assert count(db, "SELECT COUNT(*) FROM private_history") == 6

    # 7 days: the 10-day-old messages go, the 5-day-old and new ones stay.
    kept = ServerProcess(
        tmp_path / "s", protocols=("irc",), overrides={"history": {"retention": 7}}
    )
    kept.start()
    try:
        deadline = time.monotonic() + 20
        while count(db, "SELECT COUNT(*) FROM history") != 2:
            assert time.monotonic() < deadline, kept.log()
            time.sleep(0.1)
        alice = IrcPeer(kept.ports["irc"], "alice", caps=CAPS, sasl=("alice", PASSWORD))
        assert chathistory(alice, "LATEST", "bob", "*", "10") == ["private 1", "private 2"]
        alice.join("keep")
        alice.sync()
        assert chathistory(alice, "LATEST", "#keep", "*", "10") == [
            "room message 1",
            "room message 2",
        ]
        alice.close()
    finally:
        kept.stop()
    assert count(db, "SELECT COUNT(*) FROM private_history") == 4

    # Purge by account (only its own archive), then everything older than a day.
    done = cli(kept, "history", "purge", "--account", "alice")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "deleted 2 messages"
    assert count(db, "SELECT COUNT(*) FROM private_history WHERE owner = 'alice'") == 0
    assert count(db, "SELECT COUNT(*) FROM private_history WHERE owner = 'bob'") == 2
    yesterday = time.strftime("%Y-%m-%d", time.gmtime(time.time() - DAY))
    done = cli(kept, "history", "purge", "--before", yesterday)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "deleted 2 messages"  # the 5-day-old room and bob messages
    assert count(db, "SELECT COUNT(*) FROM history") == 1
    done = cli(kept, "history", "purge", "--room", "#keep")
    assert done.stdout.strip() == "deleted 1 messages"
    bad = cli(kept, "history", "purge")
    assert bad.returncode != 0 and "--room" in bad.stderr
    # Deleting an account deletes its private archive.
    done = cli(kept, "account", "delete", "bob")
    assert done.returncode == 0, done.stderr
    assert count(db, "SELECT COUNT(*) FROM private_history") == 0


def test_a_room_operator_keeps_less_and_other_rooms_keep_theirs(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "r", protocols=("irc",), overrides={"history": {"retention": 30}}
    )
    server.start()
    try:
        server.create_account("alice", PASSWORD)
        alice = IrcPeer(server.ports["irc"], "alice", caps=CAPS, sasl=("alice", PASSWORD))
        for room in ("keep", "other"):
            alice.join(room)
        alice.sync()
        alice.send("CS REGISTER #keep")
        alice.expect(lambda m: m.command == "NOTICE" and "registered" in m.last)
        db = server.data_dir / "chatserver.db"
        conn = sqlite3.connect(db, timeout=10)
        with conn:
            now = time.time()
            for room in ("keep", "other"):
                for n, age in enumerate((3, 2, 0.5)):
                    conn.execute(
                        f"INSERT INTO history ({COLUMNS}) VALUES (?, ?, ?, 'x', 'x', 'h', NULL,"
                        " '', 'privmsg', ?, '[]')",
                        (f"{room}{n}", room, now - age * DAY, f"{room} {n}"),
                    )
        conn.close()
        guest = IrcPeer(server.ports["irc"], "guest", caps=CAPS)
        guest.join("keep")
        guest.sync()
        guest.send("CS RETENTION #keep 1")
        refused = guest.expect(lambda m: m.command == "NOTICE")
        assert "failed" in refused.last and "operators" in refused.last
        alice.send("CS RETENTION #keep 30")
        assert "choose fewer" in alice.expect(lambda m: m.command == "NOTICE").last
        alice.send("CS RETENTION #keep 1")
        done = alice.expect(lambda m: m.command == "NOTICE")
        assert done.last == "#keep keeps history 1 days (2 older messages deleted).", done.last
        assert chathistory(alice, "LATEST", "#keep", "*", "10") == ["keep 2"]
        assert chathistory(alice, "LATEST", "#other", "*", "10") == [
            "other 0",
            "other 1",
            "other 2",
        ]
        alice.close()
        guest.close()
    finally:
        server.stop()
    # The room's choice is kept with its registration.
    server.start()
    try:
        alice = IrcPeer(server.ports["irc"], "alice", caps=CAPS, sasl=("alice", PASSWORD))
        alice.send("CS RETENTION #keep OFF")
        assert "as the server does" in alice.expect(lambda m: m.command == "NOTICE").last
    finally:
        server.stop()
