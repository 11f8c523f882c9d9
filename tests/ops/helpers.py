"""The real server for operations tests: extra config text, signals, log waits, clients."""

from __future__ import annotations

import re
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from chatserver.passwords import hash_password
from tests.support.server import LineClient, ServerProcess, free_port

REPO = Path(__file__).resolve().parents[2]
OPER_PASSWORD = "oper-secret"
# Cheap scrypt parameters: the hash is only checked, and tests should not wait for it.
OPER_HASH = hash_password(OPER_PASSWORD, n=1 << 10, r=8, p=1)
PASSWORD = "account-pw"


class OpsServer(ServerProcess):
    """A ServerProcess with raw TOML appended (``[[operators]]``, ``[[bans]]``) and helpers."""

    def __init__(self, tmp_path: Path, *, extra: str = "", **kwargs: Any) -> None:
        super().__init__(tmp_path, **kwargs)
        if extra:
            with open(self.config_path, "a") as fp:
                fp.write("\n" + extra + "\n")

    @property
    def db_path(self) -> Path:
        return self.data_dir / "chatserver.db"

    def edit_config(self, changes: dict[str, dict[str, Any]], extra: str | None = None) -> None:
        """Change keys of the config file; ``extra`` (if given) replaces the arrays of tables
        (``[[operators]]``, ``[[bans]]``) that follow the sections."""
        import tomllib

        from tests.support.server import write_config

        data = tomllib.loads(self.config_path.read_text())
        arrays = {k: data.pop(k) for k in list(data) if isinstance(data[k], list)}
        for section, values in changes.items():
            data.setdefault(section, {}).update(values)
        write_config(self.config_path, data)
        if extra is None:
            extra = "".join(
                f"[[{name}]]\n" + "".join(f'{k} = "{v}"\n' for k, v in table.items())
                for name, tables in arrays.items()
                for table in tables
            )
        with open(self.config_path, "a") as fp:
            fp.write("\n" + extra + "\n")

    def reload(self, expect: str = "reload: configuration applied") -> int:
        """SIGHUP, and wait for the reload's log line; returns where its log lines start."""
        mark = len(self.log())
        self.sighup()
        self.wait_log(expect, start=mark)
        return mark

    def sighup(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def sigkill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def wait_log(self, pattern: str, timeout: float = 5.0, start: int = 0) -> str:
        """The first log line (from character ``start`` on) matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()[start:]
            for line in text.splitlines():
                if regex.search(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line matching {pattern!r}:\n{self.log()[-4000:]}")
            time.sleep(0.05)


def operators_toml(name: str = "admin") -> str:
    return f'[[operators]]\nname = "{name}"\npassword = "{OPER_HASH}"\n'


def chat(port: int, nick: str, *, host: str = "127.0.0.1", timeout: float = 5.0) -> LineClient:
    """A line client that has claimed ``nick``."""
    client = LineClient(port, host=host, timeout=timeout)
    client.expect("*** Choose a nick:")
    client.send(nick)
    client.expect(f"*** You are {nick}.")
    return client


def chat_as(port: int, nick: str, password: str, *, timeout: float = 5.0) -> LineClient:
    """A line client logged in to the account ``nick`` before choosing a nick (a registered
    nick is only for its account's sessions): it gets the account's nick."""
    client = LineClient(port, timeout=timeout)
    client.expect("*** Choose a nick:")
    client.send(f"/identify {nick} {password}")
    client.expect(f"*** You are {nick}.")
    return client


def join(client: LineClient, room: str) -> None:
    client.send(f"/join {room}")
    client.expect(f"*** now talking in #{room}")


def sync(client: LineClient) -> None:
    client.send("/ping")
    client.expect("*** pong")


class TlsLineClient(LineClient):
    """LineClient over TLS (any certificate accepted; ``certificate`` is the server's, DER)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection((host, port), timeout=timeout)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.timeout = timeout
        self.buffer = b""
        self.seen = []
        self.certificate = self.sock.getpeercert(binary_form=True)


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def cli(*args: str, stdin: str = "", timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatserver", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def query(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows from the database file, read-only (the server may be running)."""
    conn = sqlite3.connect(Path(db).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def non_loopback_address() -> str | None:
    """An address of this machine other than loopback (None if it has none)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            # No packet is sent: connecting a UDP socket only picks the outgoing address.
            probe.connect(("192.0.2.1", 9))
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


__all__ = ["LineClient", "free_port"]
