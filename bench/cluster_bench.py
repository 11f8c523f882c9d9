"""Cluster mode against one process: server CPU per message, and whether anything is lost.

Two scenarios over IRC, each run on one process and then on two nodes sharing a private
Redis (``[cluster]``), with the users spread over both nodes one by one:

* ``fanout``: one sender, one room of ``RECEIVERS`` receivers, ``MESSAGES`` messages sent
  at once;
* ``rooms``: ``ROOMS`` rooms of ``MEMBERS`` users, one sender in each, ``PER_ROOM``
  messages each.

Measured: the CPU time (user + system, from ``/proc``) each server process and Redis spent
from the first message to the last delivery, per message sent, and the deliveries counted
at the receivers against those expected.  CPU time, not wall time, is the figure that holds
on a shared machine.  Usage: ``.venv/bin/python bench/cluster_bench.py`` (a few seconds).
"""

from __future__ import annotations

import os
import selectors
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.redis import RedisServer
from tests.support.server import ServerProcess

MESSAGES = 20_000
RECEIVERS = 20
ROOMS = 50
MEMBERS = 4
PER_ROOM = 200
TICK = os.sysconf("SC_CLK_TCK")
# No flood control (one client sends everything at once), no per-address cap (all local).
OVERRIDES = {"irc": {"flood_burst": 0}, "chat": {"max_connections_per_address": 0}}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def connect(port: int, nick: str, room: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\nJOIN #{room}\r\n".encode())
    seen = b""
    while f" 366 {nick} #{room} ".encode() not in seen:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"{nick}: closed")
        seen += chunk
    return sock


def drain(receivers: dict[socket.socket, int], timeout: float) -> int:
    """Read until each receiver has its expected count of room messages; the total read."""
    sel = selectors.DefaultSelector()
    got = dict.fromkeys(receivers, 0)
    tails = dict.fromkeys(receivers, b"")
    for sock in receivers:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
    waiting = len(receivers)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for key, _ in sel.select(1.0):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            data = tails[sock] + sock.recv(1 << 20)
            whole, _, tails[sock] = data.rpartition(b"\n")
            got[sock] += whole.count(b" PRIVMSG #")
            if got[sock] >= receivers[sock]:
                sel.unregister(sock)
                waiting -= 1
    return sum(got.values())


def run(servers: list[ServerProcess], redis: RedisServer | None, scenario: str) -> str:
    """Connect the users (spread over ``servers`` one by one), send, and measure."""
    node = iter(servers * 100_000)
    receivers: dict[socket.socket, int] = {}
    senders: list[tuple[socket.socket, str, int]] = []
    if scenario == "fanout":
        for i in range(RECEIVERS):
            receivers[connect(next(node).ports["irc"], f"r{i}", "bench")] = MESSAGES
        senders.append((connect(servers[0].ports["irc"], "sender", "bench"), "bench", MESSAGES))
    else:
        for room in range(ROOMS):
            name = f"room{room}"
            senders.append((connect(next(node).ports["irc"], f"s{room}", name), name, PER_ROOM))
            for member in range(MEMBERS - 1):
                sock = connect(next(node).ports["irc"], f"m{room}x{member}", name)
                receivers[sock] = PER_ROOM
    # Every join has reached every node, and the servers are idle again.
    time.sleep(3.0)
    pids = [s.proc.pid for s in servers if s.proc is not None]
    if redis is not None and redis.proc is not None:
        pids.append(redis.proc.pid)
    before = [cpu_seconds(pid) for pid in pids]
    started = time.monotonic()
    for sock, room, count in senders:
        lines = (f"PRIVMSG #{room} :message {i} of the benchmark\r\n" for i in range(count))
        sock.sendall("".join(lines).encode())
    delivered = drain(receivers, timeout=180)
    elapsed = time.monotonic() - started
    time.sleep(0.5)
    used = [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
    sent = sum(count for _, _, count in senders)
    expected = sum(receivers.values())
    for sock in list(receivers) + [s for s, _, _ in senders]:
        sock.close()
    names = [f"node {i}" for i in range(len(servers))] if redis else ["server"]
    if redis is not None:
        names.append("redis")
    costs = ", ".join(f"{n} {u * 1e6 / sent:.1f}" for n, u in zip(names, used, strict=True))
    total = sum(used) * 1e6 / sent
    return (
        f"{scenario:7} {len(servers)} process(es): {sent} messages, delivered {delivered}/"
        f"{expected} in {elapsed:.2f} s; CPU µs per message: {costs} (total {total:.1f})"
    )


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="chatserver-cluster-bench-"))
    for scenario in ("fanout", "rooms"):
        single = ServerProcess(base / f"{scenario}-one", protocols=("irc",), overrides=OVERRIDES)
        try:
            print(run([single.start()], None, scenario), flush=True)
        finally:
            single.kill()
        redis = RedisServer().start()
        nodes = [
            ServerProcess(
                base / f"{scenario}-n{i}",
                protocols=("irc",),
                overrides={**OVERRIDES, "cluster": {"redis": redis.url, "node": f"n{i}"}},
            )
            for i in range(2)
        ]
        try:
            print(run([n.start() for n in nodes], redis, scenario), flush=True)
        finally:
            for n in nodes:
                n.kill()
            redis.destroy()


if __name__ == "__main__":
    main()
