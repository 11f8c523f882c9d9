"""The load generator's bookkeeping, against a tiny fake chat server in this process.

A server that duplicates or drops one delivery must show up as exactly that in the
generator's counts: the benchmark's "nothing lost, nothing duplicated" rests on it.
"""

from __future__ import annotations

import json
import selectors
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOADGEN = ROOT / "bench" / "build" / "loadgen"


@pytest.fixture(scope="module")
def loadgen() -> Path:
    subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--build-only"], check=True)
    return LOADGEN


class FakeRoomServer:
    """Line chat in miniature: a nick line, ``/join``, then each line goes to the others.

    ``fault`` is ``None``, ``"dup"`` (the 5th relayed line reaches one member twice) or
    ``"drop"`` (the 5th relayed line does not reach one member).
    """

    def __init__(self, fault: str | None) -> None:
        self.fault = fault
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.buffers: dict[socket.socket, bytes] = {}
        self.nicks: dict[socket.socket, str] = {}
        self.members: list[socket.socket] = []
        self.relayed = 0
        self.stopping = False
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self) -> None:
        while not self.stopping:
            for key, _ in self.selector.select(0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self.listener:
                    conn, _ = sock.accept()
                    self.buffers[conn] = b""
                    self.selector.register(conn, selectors.EVENT_READ)
                    continue
                data = sock.recv(65536)
                if not data:
                    self.selector.unregister(sock)
                    sock.close()
                    continue
                self.buffers[sock] += data
                *lines, self.buffers[sock] = self.buffers[sock].split(b"\n")
                for line in lines:
                    self.handle(sock, line.rstrip(b"\r"))

    def handle(self, sock: socket.socket, line: bytes) -> None:
        if sock not in self.nicks:
            self.nicks[sock] = line.decode()
        elif line.startswith(b"/join "):
            self.members.append(sock)
            sock.sendall(b"*** now talking in #room\r\n")
        else:
            self.relayed += 1
            text = b"<" + self.nicks[sock].encode() + b"> " + line + b"\r\n"
            others = [m for m in self.members if m is not sock]
            for index, member in enumerate(others):
                if self.relayed == 5 and index == 0 and self.fault == "drop":
                    continue
                times = 2 if self.relayed == 5 and index == 0 and self.fault == "dup" else 1
                member.sendall(text * times)

    def __enter__(self) -> FakeRoomServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping = True
        self.thread.join()
        for sock in list(self.buffers):
            sock.close()
        self.listener.close()


def run_loadgen(loadgen: Path, tmp_path: Path, port: int) -> dict[str, object]:
    config = tmp_path / "loadgen.cfg"
    config.write_text(
        "\n".join(
            [
                "per_sender 20",
                "window 3",
                "room_size 4",
                "senders_per_room 2",
                "run_timeout 2",
                "settle_ms 50",
                "wait_go 0",
                "hold 0",
                "group line",
                f"port {port}",
                "count 4",
                r"send %n\r\n/join %r\r\n",
                "expect now talking in #",
                r"msg %m\r\n",
                "end",
            ]
        )
        + "\n"
    )
    proc = subprocess.run([str(loadgen), str(config)], capture_output=True, text=True, timeout=30)
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["event"] for e in events] == ["ready", "done"], proc.stderr
    return events[1]


def test_clean_run_counts_every_delivery(loadgen: Path, tmp_path: Path) -> None:
    with FakeRoomServer(None) as server:
        done = run_loadgen(loadgen, tmp_path, server.port)
    # 2 senders x 20 messages, each to the 3 other members.
    assert done["messages"] == done["completed"] == 40
    assert done["deliveries"] == done["expected_deliveries"] == 120
    assert (done["lost"], done["duplicates"], done["misrouted"], done["bad"]) == (0, 0, 0, 0)
    assert done["timeout"] is False


def test_a_duplicate_is_counted_once_as_duplicate(loadgen: Path, tmp_path: Path) -> None:
    with FakeRoomServer("dup") as server:
        done = run_loadgen(loadgen, tmp_path, server.port)
    assert done["deliveries"] == 120
    assert done["duplicates"] == 1
    assert done["lost"] == 0


def test_a_dropped_delivery_is_lost(loadgen: Path, tmp_path: Path) -> None:
    with FakeRoomServer("drop") as server:
        done = run_loadgen(loadgen, tmp_path, server.port)
    # That message never reaches its last member, so the run waits for it until its time
    # limit and then reports the one delivery missing.
    assert done["timeout"] is True
    assert done["lost"] == 1
    assert done["duplicates"] == 0
