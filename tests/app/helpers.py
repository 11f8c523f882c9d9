"""Running the real ``chatserver`` command (and twistd) in subprocesses, for tests/app."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.support.ports import free_port as free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO / "deploy" / "chatserver.example.toml"
TAC_FILE = REPO / "deploy" / "chatserver.tac"

# Every wait in these tests is bounded by this, so a hang fails instead of stalling CI.  A
# deadline, never a wait: a `chatserver` command has taken over 8 s on a busy 2-core machine.
TIMEOUT = 30.0


def chatserver(*args: str) -> list[str]:
    return [sys.executable, "-m", "chatserver", *args]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}
    env["PYTHONUNBUFFERED"] = "1"
    # The subprocess must import this checkout, wherever pytest was started from.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_cli(
    *args: str, stdin: str = "", cwd: Path | None = None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        chatserver(*args),
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(),
        timeout=timeout,
    )


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def write_toml(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(v)}" for key, v in values.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def line_only_config(path: Path, line_port: int, **sections: dict[str, Any]) -> Path:
    """A config with only the line protocol, on 127.0.0.1:``line_port``."""
    config: dict[str, dict[str, Any]] = {
        "server": {"listen": ["127.0.0.1"], "name": "test.chatserver"},
        "line": {"port": line_port},
        "irc": {"enabled": False},
        "xmpp": {"enabled": False},
        "web": {"enabled": False},
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return write_toml(path, config)


def listening_pattern(protocol: str, host: str, port: int) -> re.Pattern[str]:
    return re.compile(rf"listening protocol={protocol} address={re.escape(host)}:{port}\b")


class Process:
    """A subprocess whose output (stdout and stderr together) is read line by line in a thread."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str],
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            env=env,
            preexec_fn=preexec_fn,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = TIMEOUT) -> str:
        """The first (new) output line matching ``pattern``; fails on timeout or exit."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no line matching {regex.pattern!r}; output:\n{self.output()}"
                )
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self._queue.put(None)
                raise AssertionError(
                    f"exited ({self.proc.wait()}) before {regex.pattern!r}; output:\n{self.output()}"
                )
            self.lines.append(line)
            if regex.search(line):
                return line

    def output(self) -> str:
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._queue.put(None)
                break
            self.lines.append(line)
        return "\n".join(self.lines)

    def terminate(self, timeout: float = TIMEOUT) -> int:
        """SIGTERM, then the exit status (the process is killed if it does not stop in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"did not exit within {timeout}s; output:\n{self.output()}"
            ) from None
        self._reader.join(timeout)
        return status

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def recv_until_closed(sock: socket.socket, timeout: float = TIMEOUT) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"connection still open; received {data!r}")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def recv_some(sock: socket.socket, timeout: float = TIMEOUT) -> bytes:
    """What arrives within ``timeout`` after the first bytes (at least those)."""
    sock.settimeout(timeout)
    data = sock.recv(65536)
    sock.settimeout(0.3)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pass
    return data
