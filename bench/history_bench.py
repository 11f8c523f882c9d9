"""The archive scenario: history queries against a database of a million stored messages.

The database is written directly (the server's own schema, from its migrations) before the
server starts: ``ROOM_MESSAGES`` room messages over ``ROOMS`` rooms and ``PRIVATE_MESSAGES``
private-archive rows over ``OWNERS`` accounts.  Then one client at a time asks, and the time
from sending a query to the end of its answer is measured:

* IRC ``CHATHISTORY LATEST #room * 100`` (a room of ``ROOM_MESSAGES / ROOMS`` messages),
* IRC ``CHATHISTORY LATEST <nick> * 100`` (a private conversation),
* an XMPP MAM page of 50 (the account's last page, RSM ``<before/>``),

each ``QUERIES`` times after a warm-up, one at a time: the figures are the latency of a single
query on an idle server, not throughput.  The database's bytes per stored message are its
size (pages in use) over its rows.
"""

from __future__ import annotations

import base64
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOMS = 1000
ROOM_MESSAGES = 1_000_000
OWNERS = 10
PEERS = 20
PRIVATE_MESSAGES = 1_000_000
QUERIES = 300
WARMUP = 20
BENCH_ACCOUNT = "archive0"
PEER = "peer0"
ROOM = "room0"
COLUMNS = "id, target, ts, nick, ident, host, account, realname, kind, text, tags"
TEXT = "a message of about the length people type in a chat, with a few more words"


@dataclass
class Figures:
    rows: int
    db_bytes: int
    seed_seconds: float
    irc_room_ms: list[float]
    irc_private_ms: list[float]
    mam_ms: list[float]

    @property
    def bytes_per_message(self) -> float:
        return self.db_bytes / self.rows


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def seed(db: Path, root: Path, scale: float = 1.0) -> tuple[int, int, float]:
    """Create the schema and the messages; (rows, bytes, seconds)."""
    sys.path.insert(0, str(root))
    from chatserver.storage.migrations import MIGRATIONS

    started = time.monotonic()
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    cur = conn.cursor()
    cur.execute("BEGIN")
    for step in MIGRATIONS:
        if callable(step):
            step(cur)
        else:
            for statement in step:
                cur.execute(statement)
    cur.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
    now = time.time()
    room_total = int(ROOM_MESSAGES * scale)
    rows = 0

    def room_rows():
        for n in range(room_total):
            room = n % ROOMS
            ts = now - (room_total - n) * 0.01
            yield (
                f"r{n:x}",
                f"room{room}",
                ts,
                f"u{n % 500}",
                "u",
                "h.cloak",
                None,
                "",
                "privmsg",
                TEXT,
                "[]",
            )

    cur.executemany(f"INSERT INTO history ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", room_rows())
    rows += room_total
    private_total = int(PRIVATE_MESSAGES * scale)

    def private_rows():
        for n in range(private_total):
            owner = f"archive{n % OWNERS}"
            peer = f"peer{(n // OWNERS) % PEERS}"
            ts = now - (private_total - n) * 0.01
            sender, target = (peer, owner) if n % 2 else (owner, peer)
            yield (
                owner,
                peer,
                f"p{n:x}",
                target,
                ts,
                sender,
                sender,
                "h.cloak",
                sender,
                "",
                "privmsg",
                TEXT,
                "[]",
            )

    cur.executemany(
        f"INSERT INTO private_history (owner, peer, {COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        private_rows(),
    )
    rows += private_total
    cur.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    return rows, (pages - free) * size, time.monotonic() - started


def create_account(config: Path, data_dir: Path, env: dict[str, str], password: str) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "chatserver",
            "account",
            "create",
            BENCH_ACCOUNT,
            "--password-stdin",
            "--config",
            str(config),
            "--data-dir",
            str(data_dir),
        ],
        input=f"{password}\n".encode(),
        check=True,
        capture_output=True,
        env=env,
        timeout=120,
    )


class Conn:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data: str) -> None:
        self.sock.sendall(data.encode())

    def until(self, marker: bytes, after: bytes | None = None) -> bytes:
        """Read until ``marker`` (after ``after``, when given) is in the buffer; return and
        drop everything up to the end of the marker."""
        while True:
            start = 0
            if after is not None:
                start = self.buf.find(after)
                if start < 0:
                    self._read()
                    continue
            end = self.buf.find(marker, start)
            if end >= 0:
                end += len(marker)
                got, self.buf = self.buf[:end], self.buf[end:]
                return got
            self._read()

    def _read(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("closed")
        self.buf += data

    def close(self) -> None:
        self.sock.close()


def irc_login(port: int, password: str) -> Conn:
    c = Conn(port)
    c.send("CAP LS 302\r\nCAP REQ :sasl batch message-tags server-time draft/chathistory\r\n")
    c.send(f"NICK {BENCH_ACCOUNT}\r\nUSER b 0 * :b\r\n")
    c.until(b" ACK ")
    c.send("AUTHENTICATE PLAIN\r\n")
    c.until(b"AUTHENTICATE +")
    blob = base64.b64encode(f"{BENCH_ACCOUNT}\0{BENCH_ACCOUNT}\0{password}".encode()).decode()
    c.send(f"AUTHENTICATE {blob}\r\n")
    c.until(b" 903 ")
    c.send("CAP END\r\n")
    c.until(b" 001 ")
    c.send(f"JOIN #{ROOM}\r\n")
    c.until(b" 366 ")
    return c


def time_irc(c: Conn, target: str, count: int, want: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        c.send(f"CHATHISTORY LATEST {target} * 100\r\n")
        got = c.until(b"\r\n", after=b"BATCH -")
        times.append((time.perf_counter() - started) * 1000)
        assert got.count(b"PRIVMSG") == want, got[-300:]
    return times


def xmpp_login(port: int, domain: str, password: str) -> Conn:
    c = Conn(port)
    stream = (
        f"<?xml version='1.0'?><stream:stream to='{domain}' xmlns='jabber:client'"
        " xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    )
    c.send(stream)
    c.until(b"</stream:features>")
    blob = base64.b64encode(f"\0{BENCH_ACCOUNT}\0{password}".encode()).decode()
    c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{blob}</auth>")
    c.until(b"<success")
    c.send(stream)
    c.until(b"</stream:features>")
    c.send(
        "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        "<resource>bench</resource></bind></iq>"
    )
    c.until(b"</jid>")
    return c


def time_mam(c: Conn, count: int, want: int) -> list[float]:
    times = []
    for n in range(count):
        started = time.perf_counter()
        c.send(
            f"<iq type='set' id='q{n}'><query xmlns='urn:xmpp:mam:2' queryid='q{n}'>"
            "<set xmlns='http://jabber.org/protocol/rsm'><max>50</max><before/></set>"
            "</query></iq>"
        )
        got = c.until(b"</iq>", after=b"<fin")
        times.append((time.perf_counter() - started) * 1000)
        assert got.count(b"<result") == want, got[-300:]
    return times


def run(server: object, root: Path, password: str, domain: str, scale: float = 1.0) -> Figures:
    """Seed, start ``server`` (a bench Chatserver, not yet started), measure, stop."""
    data_dir = server.dir / "data"  # type: ignore[attr-defined]
    rows, size, seconds = seed(data_dir / "chatserver.db", root, scale)
    server.prepare()  # type: ignore[attr-defined]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    create_account(server.dir / "chatserver.toml", data_dir, env, password)  # type: ignore[attr-defined]
    server.start()  # type: ignore[attr-defined]
    try:
        ports = server.ports  # type: ignore[attr-defined]
        irc = irc_login(ports["irc"], password)
        in_room = int(ROOM_MESSAGES * scale) // ROOMS
        in_conversation = int(PRIVATE_MESSAGES * scale) // (OWNERS * PEERS)
        in_archive = int(PRIVATE_MESSAGES * scale) // OWNERS
        time_irc(irc, f"#{ROOM}", WARMUP, min(100, in_room))
        room = time_irc(irc, f"#{ROOM}", QUERIES, min(100, in_room))
        time_irc(irc, PEER, WARMUP, min(100, in_conversation))
        private = time_irc(irc, PEER, QUERIES, min(100, in_conversation))
        irc.close()
        xmpp = xmpp_login(ports["xmpp"], domain, password)
        time_mam(xmpp, WARMUP, min(50, in_archive))
        mam = time_mam(xmpp, QUERIES, min(50, in_archive))
        xmpp.close()
    finally:
        server.stop()  # type: ignore[attr-defined]
    return Figures(rows, size, seconds, room, private, mam)


def summary(f: Figures) -> str:
    def line(name: str, values: list[float]) -> str:
        return (
            f"{name}: p50 {statistics.median(values):.2f} ms, p99 {p(values, 0.99):.2f} ms,"
            f" max {max(values):.2f} ms ({len(values)} queries)"
        )

    return "\n".join(
        [
            f"{f.rows:,} stored messages, {f.db_bytes:,} bytes: {f.bytes_per_message:.0f} bytes"
            f" per message (seeded in {f.seed_seconds:.0f}s)",
            line("CHATHISTORY LATEST #room * 100", f.irc_room_ms),
            line("CHATHISTORY LATEST nick * 100", f.irc_private_ms),
            line("MAM page of 50", f.mam_ms),
        ]
    )
