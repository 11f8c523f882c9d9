"""Run the real ``chatserver run`` in a subprocess on free loopback ports, for integration tests."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.support.ports import free_port as free_port

PROTOCOL_PORT_KEYS = {
    "line": ("port",),
    "irc": ("port", "tls_port"),
    "xmpp": ("port", "tls_port"),
    "web": ("port", "tls_port"),
}


# The [chat] cloak_secret of cluster nodes the tests and benchmarks start.
CLUSTER_CLOAK_SECRET = "the cluster's cloak secret"
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)

# Started and not yet waited for: a test that fails before its own stop() must not leave its
# server running once the test run is over.
_LIVE: set[subprocess.Popen[bytes]] = set()


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM the server when the process that started it dies (even by SIGKILL)."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@atexit.register
def _kill_live() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(OSError):
            proc.kill()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> None:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
        lines.append("")
    path.write_text("\n".join(lines))


class ServerProcess:
    """The real server.  ``ports['line']``, ``ports['irc']``, ``ports['irc_tls']`` … are loopback ports.

    ``protocols`` chooses which listeners are enabled; ``overrides`` adds config keys by
    section (e.g. ``{"chat": {"nick_enforce_timeout": 2}}``).
    """

    def __init__(
        self,
        tmp_path: Path,
        *,
        protocols: Iterable[str] = ("line",),
        overrides: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.dir = Path(tmp_path)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.dir / "data"
        self.config_path = self.dir / "chatserver.toml"
        self.log_path = self.dir / "server.log"
        self.protocols = tuple(protocols)
        self.ports: dict[str, int] = {}
        sections: dict[str, dict[str, Any]] = {
            "server": {"listen": ["127.0.0.1"], "name": "test.chatserver"},
        }
        for proto, keys in PROTOCOL_PORT_KEYS.items():
            section: dict[str, Any] = {"enabled": proto in self.protocols}
            if proto in self.protocols:
                for key in keys:
                    port = free_port()
                    section[key] = port
                    name = proto if key == "port" else f"{proto}_tls"
                    self.ports[name] = port
            sections[proto] = section
        for section_name, values in (overrides or {}).items():
            sections.setdefault(section_name, {}).update(values)
        if sections.get("cluster", {}).get("redis"):
            # Cluster mode needs one cloak secret on every node (a test may give another).
            sections.setdefault("chat", {}).setdefault("cloak_secret", CLUSTER_CLOAK_SECRET)
        write_config(self.config_path, sections)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ServerProcess:
        # A deadline, not a wait: on a busy machine the imports alone have taken over 20 s.
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chatserver",
                "run",
                "--config",
                str(self.config_path),
                "--data-dir",
                str(self.data_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=_die_with_parent,
        )
        _LIVE.add(self.proc)
        log.close()
        deadline = time.monotonic() + timeout
        for port in self.ports.values():
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.kill()
                        raise RuntimeError(
                            f"server did not listen on {port}:\n{self.log()}"
                        ) from None
                    time.sleep(0.05)
        return self

    def create_account(self, name: str, password: str) -> None:
        """Create an account the operator's way, with the CLI, while the server runs."""
        subprocess.run(
            [
                sys.executable,
                "-m",
                "chatserver",
                "account",
                "create",
                name,
                "--password-stdin",
                "--config",
                str(self.config_path),
                "--data-dir",
                str(self.data_dir),
            ],
            input=f"{password}\n".encode(),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            _LIVE.discard(self.proc)
        return status

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        _LIVE.discard(self.proc)  # type: ignore[arg-type]

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


class LineClient:
    """A blocking socket client that reads lines with a timeout (for line chat and raw IRC)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buffer = b""
        self.seen: list[str] = []

    def send(self, line: str | bytes) -> None:
        data = line if isinstance(line, bytes) else line.encode()
        if not data.endswith(b"\n"):
            data += b"\r\n"
        self.sock.sendall(data)

    def read_line(self, timeout: float | None = None) -> str:
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line; seen so far: {self.seen[-20:]}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; seen so far: {self.seen[-20:]}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        self.seen.append(text)
        return text

    def expect(self, predicate: Any, timeout: float | None = None) -> str:
        """Read lines until one contains ``predicate`` (a str) or satisfies it (a callable)."""
        test = predicate if callable(predicate) else (lambda line: predicate in line)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            line = self.read_line(max(deadline - time.monotonic(), 0.001))
            if test(line):
                return line

    def cap_ls(self, timeout: float | None = None) -> str:
        """Read a whole CAP LS reply and return its capabilities, space-separated: under
        CAP LS 302 the server spreads a long list over lines whose LS is followed by ``*``."""
        caps = []
        while True:
            line = self.expect(lambda text: " CAP " in text and " LS " in text, timeout)
            trailing = line.index(" :", 1)
            caps.append(line[trailing + 2 :])
            if not line[:trailing].endswith(" LS *"):
                return " ".join(caps)

    def read_until_closed(self, timeout: float | None = None) -> list[str]:
        lines = []
        try:
            while True:
                lines.append(self.read_line(timeout))
        except ConnectionError:
            return lines

    def close(self) -> None:
        self.sock.close()
