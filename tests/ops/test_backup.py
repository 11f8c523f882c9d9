"""``chatserver backup`` while the server runs; ``chatserver restore`` with it stopped."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.ops.helpers import PASSWORD, OpsServer, chat, cli, join, query
from tests.support.server import LineClient

pytestmark = pytest.mark.timeout(60)


def where(server: OpsServer) -> list[str]:
    return ["--config", str(server.config_path), "--data-dir", str(server.data_dir)]


def count(db: Path, table: str) -> int:
    return int(query(db, f"SELECT count(*) FROM {table}")[0][0])


def test_backup_while_chatting_then_restore(tmp_path: Path) -> None:
    server = OpsServer(
        tmp_path / "s",
        overrides={
            "chat": {"history_flush_interval": 0},
            "line": {"flood_burst": 1000, "flood_rate": 1000.0},
        },
    ).start()
    port = server.ports["line"]
    alice = chat(port, "alice")
    alice.send("/register " + PASSWORD)
    alice.expect("*** alice is now registered")
    join(alice, "dev")
    bob = chat(port, "bob")
    join(bob, "dev")
    for i in range(20):
        alice.send(f"before {i}")
    bob.expect("[#dev] <alice> before 19")

    # The copy is made while someone keeps talking: it must still be a consistent database.
    stop = threading.Event()

    def talk() -> None:
        i = 0
        while not stop.is_set():
            bob.send(f"during {i}")
            i += 1
            time.sleep(0.005)

    talker = threading.Thread(target=talk, daemon=True)
    talker.start()
    backup = tmp_path / "backups" / "chat.db"
    backup.parent.mkdir()
    result = cli("backup", str(backup), *where(server))
    stop.set()
    talker.join(5)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"backed up {server.db_path} to {backup} (")
    assert "integrity ok" in result.stdout
    assert query(backup, "PRAGMA integrity_check") == [("ok",)]
    assert query(backup, "PRAGMA journal_mode") == [("delete",)]
    assert count(backup, "accounts") == 1
    backed_up = count(backup, "history")
    assert backed_up >= 20

    # After the backup: another account and more history, which the restore will undo.
    carol = chat(port, "carol")
    carol.send("/register " + PASSWORD)
    carol.expect("*** carol is now registered")
    alice.send("after the backup")
    bob.expect("[#dev] <alice> after the backup")

    refused = cli("restore", str(backup), *where(server))
    assert refused.returncode == 1
    assert "is running" in refused.stderr and "stop it first" in refused.stderr
    assert count(server.db_path, "accounts") == 2

    assert server.stop() == 0
    restored = cli("restore", str(backup), *where(server))
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.splitlines()[0] == f"restored {backup} to {server.db_path}"
    kept = sorted(server.data_dir.glob("chatserver.db.before-restore-*"))
    assert kept and restored.stdout.splitlines()[1] == f"the previous database is kept as {kept[0]}"
    assert count(kept[0], "accounts") == 2

    server.start()
    visitor = LineClient(port)
    visitor.expect("*** Choose a nick:")
    visitor.send(f"/identify carol {PASSWORD}")
    visitor.expect("!!! error: carol is not registered")
    visitor.send(f"/identify alice {PASSWORD}")
    visitor.expect("*** you are logged in as alice")
    assert count(server.db_path, "accounts") == 1
    assert count(server.db_path, "history") == backed_up
    server.stop()


def test_restore_refuses_what_is_not_a_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not SQLite" * 100)
    data = tmp_path / "data"
    result = cli("restore", str(junk), "--data-dir", str(data))
    assert result.returncode == 1
    assert f"{junk} is not a usable database" in result.stderr
    missing = cli("restore", str(tmp_path / "nope.db"), "--data-dir", str(data))
    assert missing.returncode == 1 and "no such file" in missing.stderr
    assert not (data / "chatserver.db").exists()


def test_backup_without_a_database(tmp_path: Path) -> None:
    result = cli("backup", str(tmp_path / "b.db"), "--data-dir", str(tmp_path / "empty"))
    assert result.returncode == 1
    assert "no database at" in result.stderr


def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    first = OpsServer(tmp_path / "a").start()
    pid_file = first.data_dir / "chatserver.pid"
    assert pid_file.read_text().strip() == str(first.proc.pid)  # type: ignore[union-attr]
    second = OpsServer(tmp_path / "b")
    second.data_dir = first.data_dir
    with pytest.raises(RuntimeError, match="exited with 1"):
        second.start(timeout=10)
    assert f"is locked by a running chatserver (pid {first.proc.pid})" in second.log()  # type: ignore[union-attr]
    # After a crash the lock is gone with the process: a new server starts.
    first.sigkill()
    first.start()
    first.stop()
    assert pid_file.read_text() == ""


def test_backup_keeps_an_existing_file_and_makes_no_directories(tmp_path: Path) -> None:
    server = OpsServer(tmp_path / "s").start()
    alice = chat(server.ports["line"], "alice")
    alice.send("/register " + PASSWORD)
    alice.expect("*** alice is now registered")
    previous = tmp_path / "previous.db"
    previous.write_bytes(b"the last good backup")

    kept = cli("backup", str(previous), *where(server))
    assert kept.returncode == 1
    assert kept.stderr == f"chatserver: {previous} exists: use --force to replace it\n"
    assert previous.read_bytes() == b"the last good backup"

    nowhere = tmp_path / "no" / "such" / "dir" / "b.db"
    refused = cli("backup", str(nowhere), *where(server))
    assert refused.returncode == 1
    assert refused.stderr == f"chatserver: no such directory: {nowhere.parent} (make it first)\n"
    assert not (tmp_path / "no").exists()

    folder = cli("backup", str(tmp_path), *where(server))
    assert folder.returncode == 1 and "is a directory: name the file to write" in folder.stderr

    forced = cli("backup", str(previous), "--force", *where(server))
    assert forced.returncode == 0, forced.stderr
    assert count(previous, "accounts") == 1
    server.stop()
