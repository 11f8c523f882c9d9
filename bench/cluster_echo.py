"""Cluster mode: how long an IRC sender waits for its own message back (echo-message), on
two nodes against one process, under a background load of other senders.

In cluster mode a sender's echo is held until Redis has taken the stream entry that carries
its message to the other nodes (README, cluster mode: nothing acknowledged is lost), when
its room has members on another node.  This measures what that costs.  Two nodes share a
private Redis; ``--rooms`` rooms of ``--members`` users each, every room's users spread over
both nodes one by one, so every room has members on both.  In the first ``--probes`` rooms a
probe client with ``echo-message`` (on the nodes in turn) says ``--count`` messages one at a
time, after ``--warmup`` more not counted, each time waiting for its own copy, with a pause
of ``PAUSE`` between: the time from its send to the echo read is one sample.  Meanwhile a
background process (its own interpreter, so that it never holds up the probes' reads) has
one more user of each room say ``--rate`` messages a second in all, and reads every other
member's socket.  Then the same on one process.

Printed for each: median, 90th and 99th percentile and the slowest echo, and the background
messages delivered against those expected (every member but the sender, each message once):
the run exits non-zero if an echo or a delivery is missing.  ``--json PATH`` writes the same
figures.  Usage: ``.venv/bin/python bench/cluster_echo.py [--count 500] [--rate 1000]``; not
part of ``make bench``; results in the README's cluster section.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import selectors
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cluster_bench import OVERRIDES, connect
from tests.support.redis import RedisServer
from tests.support.server import ServerProcess

# Seconds between a probe's echo and its next message: the probes measure the echo of a
# message that is alone in its sender's input, not a queue behind its own earlier ones.
PAUSE = 0.005
# How long a probe waits for one echo, and the background for its last deliveries.
ECHO_TIMEOUT = 10.0
DRAIN_TIMEOUT = 60.0
# The background senders send their share every TICK seconds.
TICK = 0.01
# Seconds for every join to reach every node before the measurement.
SETTLE = 2.0


@dataclass
class Layout:
    """Which users go where: ``ports[i]`` is the IRC port of the server of the i-th node."""

    rooms: int
    members: int
    probes: int

    def place(self, ports: list[int], room: int, i: int) -> int:
        """The port of the ``i``-th user of ``room``: the nodes in turn, room by room."""
        return ports[(room + i) % len(ports)]


@dataclass
class Background:
    """What the background process sent and its members got."""

    sent: int = 0
    expected: int = 0
    delivered: int = 0


@dataclass
class Result:
    label: str
    echoes: list[float] = field(default_factory=list)
    expected_echoes: int = 0
    background: Background = field(default_factory=Background)

    def summary(self) -> dict[str, Any]:
        times = sorted(self.echoes)
        out: dict[str, Any] = {
            "label": self.label,
            "echoes": len(times),
            "expected_echoes": self.expected_echoes,
            "sent": self.background.sent,
            "expected_deliveries": self.background.expected,
            "deliveries": self.background.delivered,
        }
        if times:
            out |= {
                "median_ms": statistics.median(times) * 1000,
                "p90_ms": percentile(times, 0.90) * 1000,
                "p99_ms": percentile(times, 0.99) * 1000,
                "max_ms": times[-1] * 1000,
            }
        return out


def percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def register(port: int, nick: str, room: str, caps: tuple[str, ...] = ()) -> socket.socket:
    """An IRC client in ``#room``, its small writes sent at once (a probe's message must
    not wait for the acknowledgement of its previous one)."""
    sock = connect(port, nick, room, caps)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def background(ports: list[int], layout: Layout, rate: float, pipe: Connection) -> None:
    """The background process: one sender and the members of each room (but the probes),
    joined, then ``rate`` messages a second over all rooms until the parent says stop,
    then every delivery read; its figures go back through ``pipe``."""
    senders: list[tuple[socket.socket, str]] = []
    # The receivers' sockets and how many members each room has here to read its messages.
    receivers: list[socket.socket] = []
    readers = [0] * layout.rooms
    for room in range(layout.rooms):
        name = f"room{room}"
        # User 0 is the room's probe (in probe rooms) or another member; the sender is the last.
        first = 1 if room < layout.probes else 0
        for i in range(first, layout.members - 1):
            receivers.append(register(layout.place(ports, room, i), f"m{room}x{i}", name))
            readers[room] += 1
        sender = register(layout.place(ports, room, layout.members - 1), f"s{room}", name)
        senders.append((sender, name))
    got = 0
    sel = selectors.DefaultSelector()
    tails: dict[socket.socket, bytes] = {}
    for sock in receivers + [s for s, _ in senders]:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
        tails[sock] = b""

    def read(timeout: float) -> None:
        nonlocal got
        for key, _ in sel.select(timeout):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("a background client was closed")
            whole, _, tails[sock] = (tails[sock] + chunk).rpartition(b"\n")
            # The background's messages only (the probes' are not counted).
            got += whole.count(b" :load ")

    pipe.send("ready")
    pipe.recv()  # go
    figures = Background()
    per_sender = rate / len(senders)
    owed = 0.0
    seq = 0
    next_tick = time.monotonic()
    while not pipe.poll():
        owed += per_sender * TICK
        whole = int(owed)
        owed -= whole
        if whole:
            for room, (sock, name) in enumerate(senders):
                lines = "".join(f"PRIVMSG #{name} :load {seq + i}\r\n" for i in range(whole))
                sock.setblocking(True)
                sock.sendall(lines.encode())
                sock.setblocking(False)
                figures.sent += whole
                # Every member but the sender (which lacks echo-message): the probe's copies
                # are read by the probe, so counted by it, not here.
                figures.expected += whole * readers[room]
            seq += whole
        next_tick += TICK
        while (wait := next_tick - time.monotonic()) > 0:
            read(wait)
    pipe.recv()  # stop
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while got < figures.expected and time.monotonic() < deadline:
        read(0.5)
    figures.delivered = got
    pipe.send(figures)
    for sock in tails:
        sock.close()


def probe(sock: socket.socket, nick: str, room: str, i: int) -> float | None:
    """Say one message and wait for its echo: the seconds it took, or None if it never
    came.  What else the room said meanwhile is read and dropped."""
    text = f"echo {nick} {i}"
    wanted = f" PRIVMSG #{room} :{text}\r\n".encode()
    tail = b""
    start = time.perf_counter()
    sock.sendall(f"PRIVMSG #{room} :{text}\r\n".encode())
    deadline = time.monotonic() + ECHO_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            return None
        if not chunk:
            raise ConnectionError(f"{nick}: closed")
        data = tail + chunk
        if wanted in data:
            return time.perf_counter() - start
        # Keep a line's worth: the echo may be split over two reads.
        tail = data[-1024:]


def measure(
    label: str, ports: list[int], layout: Layout, count: int, warmup: int, rate: float
) -> Result:
    result = Result(label)
    parent, child = multiprocessing.get_context("fork").Pipe()
    load = multiprocessing.get_context("fork").Process(
        target=background, args=(ports, layout, rate, child), daemon=True
    )
    load.start()
    if not parent.poll(120) or parent.recv() != "ready":
        raise RuntimeError("the background clients did not join")
    probes = [
        (
            register(
                layout.place(ports, room, 0), f"probe{room}", f"room{room}", ("echo-message",)
            ),
            f"probe{room}",
            f"room{room}",
        )
        for room in range(layout.probes)
    ]
    time.sleep(SETTLE)
    parent.send("go")
    result.expected_echoes = count * len(probes)
    for i in range(warmup + count):
        for sock, nick, room in probes:
            took = probe(sock, nick, room, i)
            if took is not None and i >= warmup:
                result.echoes.append(took)
            if took is None:
                print(f"{label}: no echo for {nick} {i}", flush=True)
            time.sleep(PAUSE)
    parent.send("stop")
    if not parent.poll(DRAIN_TIMEOUT + 30):
        raise RuntimeError("the background process did not report")
    result.background = parent.recv()
    load.join(10)
    for sock, _, _ in probes:
        sock.close()
    return result


def show(result: Result) -> str:
    s = result.summary()
    head = f"{s['label']:12} {s['echoes']}/{s['expected_echoes']} echoes"
    if s["echoes"]:
        head += (
            f", median {s['median_ms']:.2f} ms, p90 {s['p90_ms']:.2f} ms,"
            f" p99 {s['p99_ms']:.2f} ms, max {s['max_ms']:.2f} ms"
        )
    return (
        f"{head}; background {s['sent']} messages,"
        f" {s['deliveries']}/{s['expected_deliveries']} deliveries"
    )


def run(label: str, start: Callable[[], list[ServerProcess]], args: argparse.Namespace) -> Result:
    servers = start()
    try:
        layout = Layout(args.rooms, args.members, args.probes)
        result = measure(
            label, [s.ports["irc"] for s in servers], layout, args.count, args.warmup, args.rate
        )
    finally:
        for server in servers:
            server.kill()
    print(show(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=500, help="echoes counted per probe")
    parser.add_argument("--warmup", type=int, default=50, help="echoes not counted per probe")
    parser.add_argument("--probes", type=int, default=4, help="probes (one room each)")
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--members", type=int, default=6, help="users per room")
    parser.add_argument("--rate", type=float, default=1000.0, help="background messages/s")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if not 0 < args.probes <= args.rooms or args.members < 3:
        parser.error("--probes must be 1 to --rooms, and --members at least 3")
    base = Path(tempfile.mkdtemp(prefix="chatserver-cluster-echo-"))
    load = os.getloadavg()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} cores, load average"
        f" {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; {args.rooms} rooms of {args.members},"
        f" {args.probes} probes x {args.count}, background {args.rate:.0f} messages/s",
        flush=True,
    )

    def one() -> list[ServerProcess]:
        return [ServerProcess(base / "one", protocols=("irc",), overrides=OVERRIDES).start()]

    redis: RedisServer | None = None

    def two() -> list[ServerProcess]:
        nonlocal redis
        redis = RedisServer().start()
        nodes = [
            ServerProcess(
                base / f"n{i}",
                protocols=("irc",),
                overrides={**OVERRIDES, "cluster": {"redis": redis.url, "node": f"n{i}"}},
            )
            for i in range(2)
        ]
        return [n.start() for n in nodes]

    results = []
    try:
        results.append(run("one process", one, args))
        results.append(run("two nodes", two, args))
    finally:
        if redis is not None:
            redis.destroy()
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": [r.summary() for r in results]}, indent=1))
    complete = all(
        len(r.echoes) == r.expected_echoes and r.background.delivered == r.background.expected
        for r in results
    )
    if not complete:
        print("MISSING echoes or deliveries", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
