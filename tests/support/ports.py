"""Loopback ports for the servers the tests start.

Asking the kernel for port 0 and closing the socket is racy twice over: the kernel may hand
the same port to the next such probe (two listeners of one server then collide), and it
takes ports from the ephemeral range, where any outgoing connection of the suite may take
it before the server binds it.  So ports come from below the ephemeral range, each one once
per test process, checked free by binding it.
"""

from __future__ import annotations

import os
import random
import socket
import threading

# Linux's default ephemeral range starts at 32768: outgoing connections never take these.
_LOW, _HIGH = 20000, 32767


def _share() -> tuple[int, int]:
    """This test process's part of the range: the suite's parallel workers (pytest-xdist)
    each take a part of their own, so no two of them ever try the same port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or "1")
    if not worker.startswith("gw") or count < 2:
        return _LOW, _HIGH
    index = int(worker[2:])
    span = (_HIGH - _LOW + 1) // count
    return _LOW + index * span, _LOW + (index + 1) * span - 1


_LOW, _HIGH = _share()
_given: set[int] = set()
_lock = threading.Lock()
# Each test process (the suite, a helper run beside it) starts at its own place in the range.
_rng = random.Random()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback TCP port that nothing listens on, never given before in this process."""
    with _lock:
        for _ in range(_HIGH - _LOW):
            port = _rng.randint(_LOW, _HIGH)
            if port not in _given and _bindable(port):
                _given.add(port)
                return port
    raise RuntimeError("no free loopback port left below the ephemeral range")
