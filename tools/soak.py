"""Soak test: hours of mixed chat against a real server, watching its memory and descriptors.

    .venv/bin/python tools/soak.py --minutes 30        (or: make soak SOAK_MINUTES=30)

Starts ``chatserver run`` on free loopback ports (line chat, IRC and XMPP), keeps a population
of clients of every protocol talking in shared rooms, and replaces some of them all the time
(connects and disconnects, some polite, some abrupt).  Every ``--sample`` seconds it prints the
server's resident memory and open file descriptors from /proc; at the end it says whether they
stayed flat: after a warm-up, the last quarter's average may not exceed the first quarter's by
more than ``--rss-slack`` (relative) and the descriptor count must come back to what the same
number of clients used at the start.  Exit status 0: flat; 1: growth; 2: the server died.

Not part of ``make test``: it runs for minutes.  It uses plain sockets only, so it drives the
protocols the way the most basic client would.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import selectors
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.server import LineClient, ServerProcess  # noqa: E402

PASSWORD = "soak-password"
ROOMS = ("soak", "soak2", "soak3")
IDLE_PING = 60.0


@dataclass
class Client:
    protocol: str
    nick: str
    sock: socket.socket
    room: str
    last_sent: float = field(default_factory=time.monotonic)
    buffer: bytes = b""
    received: int = 0


def _read_until(sock: socket.socket, marker: bytes, timeout: float = 10.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"waiting for {marker!r}, got {data[-300:]!r}")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed while waiting for {marker!r}: {data[-300:]!r}")
        data += chunk
    return data


def connect_line(port: int, nick: str, room: str) -> Client:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    _read_until(sock, b"Choose a nick:")
    sock.sendall(f"{nick}\r\n/join {room}\r\n".encode())
    _read_until(sock, f"now talking in #{room}".encode())
    return Client("line", nick, sock, room)


def connect_irc(port: int, nick: str, room: str) -> Client:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"NICK {nick}\r\nUSER {nick} 0 * :soak\r\n".encode())
    _read_until(sock, b" 001 ")
    sock.sendall(f"JOIN #{room}\r\n".encode())
    _read_until(sock, b" 366 ")
    return Client("irc", nick, sock, room)


def connect_xmpp(port: int, nick: str, room: str, domain: str = "localhost") -> Client:
    """SASL PLAIN without TLS (loopback may skip it), bind, join the room."""
    header = (
        f"<?xml version='1.0'?><stream:stream to='{domain}' xmlns='jabber:client'"
        " xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(header)
    _read_until(sock, b"</stream:features>")
    token = base64.b64encode(f"\0{nick}\0{PASSWORD}".encode()).decode()
    sock.sendall(
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>".encode()
    )
    _read_until(sock, b"<success")
    sock.sendall(header)
    _read_until(sock, b"</stream:features>")
    sock.sendall(
        b"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        b"<resource>soak</resource></bind></iq>"
    )
    _read_until(sock, b"bind1")
    sock.sendall(
        f"<presence to='{room}@conference.{domain}/{nick}'>"
        "<x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>".encode()
    )
    _read_until(sock, b"110")
    return Client("xmpp", nick, sock, room)


def say(client: Client, text: str) -> None:
    if client.protocol == "line":
        data = f"{text}\r\n".encode()
    elif client.protocol == "irc":
        data = f"PRIVMSG #{client.room} :{text}\r\n".encode()
    else:
        data = (
            f"<message to='{client.room}@conference.localhost' type='groupchat'>"
            f"<body>{text}</body></message>"
        ).encode()
    client.sock.sendall(data)
    client.last_sent = time.monotonic()


def leave(client: Client, polite: bool) -> None:
    try:
        if polite:
            if client.protocol == "line":
                client.sock.sendall(b"/quit soak churn\r\n")
            elif client.protocol == "irc":
                client.sock.sendall(b"QUIT :soak churn\r\n")
            else:
                client.sock.sendall(b"<presence type='unavailable'/></stream:stream>")
    except OSError:
        pass
    client.sock.close()


def process_stats(pid: int) -> tuple[int, int]:
    """(resident memory in bytes, open file descriptors) of ``pid``."""
    rss = 0
    with open(f"/proc/{pid}/status") as fp:
        for line in fp:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Soak:
    def __init__(self, args: argparse.Namespace, server: ServerProcess) -> None:
        self.args = args
        self.server = server
        self.selector = selectors.DefaultSelector()
        self.clients: list[Client] = []
        self.serial = 0
        self.sent = 0
        self.churned = 0
        self.failures: dict[str, int] = {}
        self.disabled: set[str] = set()
        self.want = {"line": args.line, "irc": args.irc, "xmpp": args.xmpp}

    def _connect(self, protocol: str) -> Client | None:
        self.serial += 1
        room = random.choice(ROOMS)
        try:
            if protocol == "line":
                client = connect_line(self.server.ports["line"], f"l{self.serial}", room)
            elif protocol == "irc":
                client = connect_irc(self.server.ports["irc"], f"i{self.serial}", room)
            else:
                # XMPP logs in to one of the accounts made at the start.
                nick = f"x{random.randrange(self.args.xmpp * 2)}"
                if any(c.nick == nick for c in self.clients):
                    return None
                client = connect_xmpp(self.server.ports["xmpp"], nick, room)
        except (OSError, TimeoutError) as err:
            self.failures[protocol] = self.failures.get(protocol, 0) + 1
            if self.failures[protocol] == 1:
                print(f"soak: {protocol} connect failed: {err}", flush=True)
            if self.failures[protocol] >= 5 and not any(
                c.protocol == protocol for c in self.clients
            ):
                print(f"soak: giving up on {protocol}", flush=True)
                self.disabled.add(protocol)
            return None
        client.sock.setblocking(False)
        self.selector.register(client.sock, selectors.EVENT_READ, client)
        self.clients.append(client)
        return client

    def _drop(self, client: Client, polite: bool) -> None:
        self.clients.remove(client)
        self.selector.unregister(client.sock)
        leave(client, polite)

    def fill(self) -> None:
        for protocol, count in self.want.items():
            if protocol in self.disabled:
                continue
            have = sum(1 for c in self.clients if c.protocol == protocol)
            for _ in range(count - have):
                self._connect(protocol)

    def drain(self, timeout: float) -> None:
        for key, _mask in self.selector.select(timeout):
            client: Client = key.data
            try:
                data = client.sock.recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self._drop(client, polite=False)
                continue
            client.received += len(data)
            if client.protocol == "irc":
                client.buffer = (client.buffer + data)[-4096:]
                if b"PING " in client.buffer:
                    token = client.buffer.split(b"PING ", 1)[1].split(b"\r\n", 1)[0]
                    client.sock.sendall(b"PONG " + token + b"\r\n")
                    client.buffer = b""

    def tick(self, now: float) -> None:
        for client in list(self.clients):
            busy = random.random() < self.args.rate * self.args.tick / max(len(self.clients), 1)
            if busy or now - client.last_sent > IDLE_PING:
                try:
                    say(
                        client, f"soak {self.sent} from {client.nick} " + "x" * random.randrange(80)
                    )
                    self.sent += 1
                except OSError:
                    self._drop(client, polite=False)
        if self.clients and random.random() < self.args.churn * self.args.tick:
            self._drop(random.choice(self.clients), polite=random.random() < 0.5)
            self.churned += 1
        self.fill()

    def run(self) -> int:
        pid = self.server.proc.pid  # type: ignore[union-attr]
        end = time.monotonic() + self.args.minutes * 60
        self.fill()
        baseline_clients = len(self.clients)
        samples: list[tuple[float, int, int, int]] = []
        next_sample = time.monotonic()
        start = next_tick = time.monotonic()
        print("  time      rss (MiB)  fds  clients  sent  churned", flush=True)
        while time.monotonic() < end:
            if self.server.proc.poll() is not None:  # type: ignore[union-attr]
                print(f"soak: the server died ({self.server.proc.returncode})")  # type: ignore[union-attr]
                print(self.server.log()[-3000:])
                return 2
            self.drain(max(next_tick - time.monotonic(), 0.0))
            now = time.monotonic()
            if now >= next_tick:
                # Paced by the clock, not by how often data arrives.
                self.tick(now)
                next_tick = max(next_tick + self.args.tick, now)
            if now >= next_sample:
                rss, fds = process_stats(pid)
                samples.append((now - start, rss, fds, len(self.clients)))
                print(
                    f"{now - start:7.0f}s  {rss / 2**20:10.1f}  {fds:4d}  {len(self.clients):7d}"
                    f"  {self.sent:5d}  {self.churned:7d}",
                    flush=True,
                )
                next_sample = now + self.args.sample
        return self.verdict(samples, baseline_clients)

    def verdict(self, samples: list[tuple[float, int, int, int]], clients: int) -> int:
        if len(samples) < 8:
            print("soak: too few samples to judge; run longer")
            return 0
        body = samples[len(samples) // 10 :]  # past the warm-up
        quarter = max(len(body) // 4, 1)
        first = statistics.mean(s[1] for s in body[:quarter])
        last = statistics.mean(s[1] for s in body[-quarter:])
        growth = (last - first) / first
        fd_start = [s[2] - s[3] for s in body[:quarter]]
        fd_end = [s[2] - s[3] for s in body[-quarter:]]
        # Descriptors not explained by connected clients (listeners, the database, logs).
        fd_drift = statistics.mean(fd_end) - statistics.mean(fd_start)
        rss_flat = growth <= self.args.rss_slack
        fds_flat = abs(fd_drift) <= 2
        print(
            f"soak: rss {first / 2**20:.1f} MiB -> {last / 2**20:.1f} MiB ({growth:+.1%},"
            f" slack {self.args.rss_slack:.0%}): {'flat' if rss_flat else 'GROWING'}"
        )
        print(
            f"soak: fds beyond one per client {statistics.mean(fd_start):.1f} ->"
            f" {statistics.mean(fd_end):.1f}: {'flat' if fds_flat else 'GROWING'}"
        )
        print(
            f"soak: {self.sent} messages, {self.churned} disconnects and reconnects,"
            f" {clients} clients at a time, connect failures {self.failures or 'none'}"
        )
        return 0 if rss_flat and fds_flat else 1


def make_accounts(server: ServerProcess, count: int) -> None:
    """XMPP clients log in: make their accounts through line chat."""
    for i in range(count):
        client = LineClient(server.ports["line"])
        client.expect("Choose a nick:")
        client.send(f"x{i}")
        client.expect(f"You are x{i}.")
        client.send(f"/register {PASSWORD}")
        client.expect("is now registered")
        client.send("/quit")
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--line", type=int, default=40, help="line clients at a time")
    parser.add_argument("--irc", type=int, default=40, help="IRC clients at a time")
    parser.add_argument("--xmpp", type=int, default=20, help="XMPP clients at a time")
    parser.add_argument("--rate", type=float, default=200.0, help="messages per second, overall")
    parser.add_argument("--churn", type=float, default=5.0, help="reconnects per second")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--tick", type=float, default=0.05, help=argparse.SUPPRESS)
    parser.add_argument("--rss-slack", type=float, default=0.10, help="allowed RSS growth")
    args = parser.parse_args(argv)
    random.seed(7)
    with tempfile.TemporaryDirectory(prefix="chatserver-soak-") as tmp:
        protocols = [p for p, n in (("line", 1), ("irc", args.irc), ("xmpp", args.xmpp)) if n]
        server = ServerProcess(
            Path(tmp),
            protocols=protocols,
            overrides={
                "chat": {"max_connections_per_address": 0},
                "line": {"flood_burst": 100, "flood_rate": 50.0},
                "irc": {"flood_burst": 100, "flood_rate": 50.0},
            },
        )
        server.start()
        try:
            if args.xmpp:
                make_accounts(server, args.xmpp * 2)
            return Soak(args, server).run()
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
