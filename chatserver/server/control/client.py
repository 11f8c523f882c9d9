"""Asking the running server through its control socket (blocking; for the command line)."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

from chatserver.server.control import SOCKET_NAME


class ControlError(Exception):
    """The socket cannot be used, or the server answered with an error."""


class NotRunning(ControlError):
    """No server answers on the socket (none is running on this data directory)."""


def socket_path(data_dir: Path) -> Path:
    return Path(data_dir) / SOCKET_NAME


def check_permissions(path: Path) -> None:
    """Refuse a socket that others could use or that another user owns: what goes through it
    (passwords among others) must reach only the server this user runs."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise NotRunning(f"no control socket at {path}: is the server running?") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"{path} is not a socket")
    if st.st_uid != os.getuid():
        raise ControlError(
            f"{path} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}):"
            " run this as the server's user"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ControlError(
            f"{path} has mode {mode:04o}: others could use it; it must be 0600"
            " (restart the server to make it again)"
        )


class ControlClient:
    """One connection to the control socket; :meth:`ask` sends a request, returns the answer."""

    def __init__(self, data_dir: Path, timeout: float = 60.0) -> None:
        path = socket_path(data_dir)
        check_permissions(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            self.sock.close()
            raise NotRunning(f"no server answers on {path}: is it running?") from None
        except OSError as err:
            self.sock.close()
            raise ControlError(f"cannot connect to {path}: {err}") from None
        self.buffer = b""

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """The server's answer to ``request``; raises ControlError if it says ``ok: false``."""
        try:
            self.sock.sendall(json.dumps(request).encode() + b"\n")
            while b"\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ControlError("the server closed the control connection")
                self.buffer += chunk
        except TimeoutError:
            raise ControlError("no answer from the server in time") from None
        except OSError as err:
            raise ControlError(f"control connection failed: {err}") from None
        line, _, self.buffer = self.buffer.partition(b"\n")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise ControlError(str(answer.get("error", "the server refused")))
        return answer

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
