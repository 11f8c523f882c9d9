"""Debian's redis-server, run privately by the test suite: never the system service.

:class:`RedisServer` starts ``redis-server`` in the foreground on a free loopback port with
its working directory in a fresh temporary directory, and removes the directory at the end.
By default without persistence: a test that stops it and starts it again sees what a Redis
that lost its data looks like.  With ``persist=True`` it keeps an append-only file synced
before every answer, so one killed and started again comes back with everything it
answered for, as a Redis with persistence does after a crash.  :meth:`RedisServer.pause`
and :meth:`RedisServer.resume` stop and continue the process (SIGSTOP, SIGCONT): its
sockets stay open and nothing answers, as when the network to it or its host stalls.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.server import free_port

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)

BINARY = shutil.which("redis-server")
MISSING_REASON = "redis-server is not installed (.ci/run installs the Debian package redis-server)"


def _die_with_parent() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class RedisServer:
    def __init__(self, *, persist: bool = False) -> None:
        if BINARY is None:
            raise RuntimeError(MISSING_REASON)
        self.dir = Path(tempfile.mkdtemp(prefix="chatserver-redis-"))
        self.port = free_port()
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def socket(self) -> Path:
        return self.dir / "redis.sock"

    @property
    def unix_url(self) -> str:
        """The same Redis through its Unix socket (in its private directory)."""
        return f"unix://{self.socket}?db=0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        assert BINARY is not None
        log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [
                BINARY,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "yes" if self.persist else "no",
                "--appendfsync",
                "always",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while self.command("PING") != "+PONG":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{self.log()}")
            time.sleep(0.05)
        return self

    def command(self, *args: str) -> str:
        """One command in RESP; the first line of the reply, or a bulk string's whole value
        ('' when Redis does not answer)."""
        request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(request.encode())
                data = b""
                while b"\r\n" not in data:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"$") and not data.startswith(b"$-1"):
                    # A bulk string: its length, then its value (INFO's holds many lines).
                    start = data.index(b"\r\n") + 2
                    end = start + int(data[1 : start - 2])
                    while len(data) < end:
                        chunk = sock.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    return data[start:end].decode()
                return data.split(b"\r\n")[0].decode()
        except OSError:
            return ""

    def log(self) -> str:
        try:
            return (self.dir / "redis.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """Gone at once; its data with it unless it persists (then :meth:`start` brings it
        back)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        """Stopped where it is: connections stay open and nothing is answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Going on from where :meth:`pause` stopped it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def destroy(self) -> None:
        self.kill()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.dir)
