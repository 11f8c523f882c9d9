"""The real server against a database it cannot use: refused at the start, reported by /health
while writes fail; and a start that is bound to fail fails before it touches the database."""

from __future__ import annotations

import ctypes
import os
import resource
import socket
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from chatserver.storage.migrations import MIGRATIONS
from tests.app.helpers import (
    TIMEOUT,
    chatserver,
    clean_env,
    free_port,
    line_only_config,
    recv_some,
    run_cli,
)
from tests.support.procs import set_file_size_limit

pytestmark = pytest.mark.timeout(60)

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2


def obey_file_modes() -> None:
    """preexec_fn: root ignores file permissions; without these two capabilities it does not,
    so a read-only file is read-only to the server whoever runs the tests."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_args(config: Path, data: Path) -> list[str]:
    return chatserver("run", "--config", str(config), "--data-dir", str(data))


def make_database(tmp_path: Path, config: Path, accounts: int = 3) -> Path:
    """A database made the operator's way (the CLI), with accounts and some history."""
    data = tmp_path / "data"
    for n in range(accounts):
        done = run_cli(
            "account", "create", f"user{n}", "--password-stdin",
            "--config", str(config), "--data-dir", str(data),
            stdin="secret-pw\n", timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    db = data / "chatserver.db"
    with sqlite3.connect(db) as conn:
        # Enough rows for the history table to span many pages.
        conn.executemany(
            "INSERT INTO history (id, target, ts, nick, ident, host, account, realname, kind,"
            " text, tags) VALUES (?, 'dev', ?, 'n', 'i', 'h', NULL, 'r', 'privmsg', ?, '[]')",
            [(f"id{i}", float(i), "x" * 200) for i in range(2000)],
        )
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db


def test_a_read_only_database_is_refused(tmp_path: Path, spawn) -> None:
    port = free_port()
    config = line_only_config(tmp_path / "c.toml", port)
    db = make_database(tmp_path, config, accounts=1)
    db.chmod(0o444)
    server = spawn(run_args(config, tmp_path / "data"), env=clean_env(), preexec_fn=obey_file_modes)
    assert server.wait(30) == 1
    output = server.output()
    assert f"cannot start: the database {db} cannot be written" in output, output
    assert "readonly database" in output and "permissions" in output
    assert "Traceback" not in output
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def damage(db: Path) -> None:
    """Overwrite a page in the middle of the history table with garbage."""
    with sqlite3.connect(db) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    with open(db, "r+b") as fp:
        fp.seek(page_size * (pages // 2))
        fp.write(b"\xa5" * page_size)


def test_a_damaged_database_is_refused_before_anything_writes_to_it(tmp_path: Path, spawn) -> None:
    port = free_port()
    config = line_only_config(tmp_path / "c.toml", port)
    db = make_database(tmp_path, config)
    damage(db)
    before = db.read_bytes()
    server = spawn(run_args(config, tmp_path / "data"), env=clean_env())
    assert server.wait(30) == 1
    output = server.output()
    assert f"cannot start: the database {db} is damaged (" in output, output
    assert "restore a backup" in output
    assert "Traceback" not in output
    assert db.read_bytes() == before


def test_an_empty_database_file_is_used_with_a_warning(tmp_path: Path, spawn) -> None:
    port = free_port()
    config = line_only_config(tmp_path / "c.toml", port)
    db = tmp_path / "data" / "chatserver.db"
    db.parent.mkdir()
    db.touch()
    server = spawn(run_args(config, tmp_path / "data"), env=clean_env())
    server.wait_for(r"ready server=")
    warning = next(line for line in server.lines if "was empty" in line)
    assert "#warn]" in warning and str(db) in warning and "restore a backup" in warning
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        recv_some(sock)
        sock.sendall(b"/nick alice\r\n/register secret-pw\r\n")
        deadline = time.monotonic() + TIMEOUT
        seen = b""
        while b"now registered" not in seen and time.monotonic() < deadline:
            seen += recv_some(sock)
        assert b"alice is now registered" in seen, seen
    assert server.terminate() == 0
    # A file that did not exist is simply created, without the warning.
    other = tmp_path / "other"
    again = spawn(run_args(config, other), env=clean_env())
    again.wait_for(r"ready server=")
    assert again.terminate() == 0
    assert f"SQLite store {other / 'chatserver.db'}: created a new database" in again.output()
    assert "was empty" not in again.output()


def health(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status, response.read().decode().strip()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode().strip()


def test_health_is_unhealthy_while_writes_fail_and_healthy_once_they_succeed(
    tmp_path: Path, spawn
) -> None:
    port, http = free_port(), free_port()
    config = line_only_config(
        tmp_path / "c.toml",
        port,
        metrics={"enabled": True, "port": http},
        chat={"history_flush_interval": 0},
    )
    server = spawn(run_args(config, tmp_path / "data"), env=clean_env())
    server.wait_for(r"ready server=")
    assert health(http) == (200, "ok")
    pid = server.proc.pid
    limit = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        recv_some(sock)
        sock.sendall(b"/nick alice\r\n/join dev\r\n")
        recv_some(sock)
        # From now on the server cannot write past the first byte of any file: the disk is
        # "full" for it.  (Its output is a pipe, which the limit does not touch.)
        set_file_size_limit(pid, 1)
        sock.sendall(b"kept in memory, not on disk\r\n")
        server.wait_for(r"SQLite store .*: append failed: ", timeout=TIMEOUT)
        status, why = health(http)
        assert status == 503 and why.startswith("database writes fail: "), (status, why)
        # Still failing on the next check: the check itself tries a write.
        assert health(http)[0] == 503
        set_file_size_limit(pid, limit[0])
        assert health(http) == (200, "ok")
        server.wait_for(r"writes succeed again")
        sock.sendall(b"stored again\r\n")
    assert health(http) == (200, "ok")
    assert server.terminate() == 0
    # The messages said while the disk was full were kept and written once it was not.
    with sqlite3.connect(tmp_path / "data" / "chatserver.db") as conn:
        texts = [text for (text,) in conn.execute("SELECT text FROM history ORDER BY ts")]
    assert texts == ["kept in memory, not on disk", "stored again"]


# -- a start bound to fail fails before the database exists ----------------------------------


def test_a_port_in_use_fails_the_start_before_the_database_is_made(tmp_path: Path, spawn) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = line_only_config(tmp_path / "c.toml", port)
        server = spawn(run_args(config, tmp_path / "data"), env=clean_env())
        assert server.wait(30) == 1
    output = server.output()
    assert f"cannot start: cannot listen protocol=line address=127.0.0.1:{port}" in output
    assert not (tmp_path / "data" / "chatserver.db").exists(), output
    assert "Traceback" not in output


def test_a_metrics_port_in_use_fails_the_start_before_the_database_is_made(
    tmp_path: Path, spawn
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        http = taken.getsockname()[1]
        config = line_only_config(
            tmp_path / "c.toml", free_port(), metrics={"enabled": True, "port": http}
        )
        server = spawn(run_args(config, tmp_path / "data"), env=clean_env())
        assert server.wait(30) == 1
    assert f"cannot listen for metrics address=127.0.0.1:{http}" in server.output()
    assert not (tmp_path / "data" / "chatserver.db").exists()


def test_a_bad_certificate_fails_the_start_before_an_old_database_is_migrated(
    tmp_path: Path, spawn
) -> None:
    port = free_port()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    key.write_text("nor is this a key\n")
    config = line_only_config(
        tmp_path / "c.toml",
        port,
        line={"port": port, "tls_port": free_port()},
        tls={"certificate": str(cert), "key": str(key)},
    )
    # An old database (schema version 1): the start must not migrate it and then fail.
    db = tmp_path / "data" / "chatserver.db"
    db.parent.mkdir()
    with sqlite3.connect(db) as conn:
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
    before = db.read_bytes()
    server = spawn(run_args(config, tmp_path / "data"), env=clean_env())
    assert server.wait(30) == 1
    output = server.output()
    assert "cannot start: " in output and str(cert) in output, output
    assert db.read_bytes() == before
    assert not os.path.exists(str(db) + "-wal")
    # And without any database, none is made.
    fresh = tmp_path / "fresh"
    server = spawn(run_args(config, fresh), env=clean_env())
    assert server.wait(30) == 1
    assert not (fresh / "chatserver.db").exists()
