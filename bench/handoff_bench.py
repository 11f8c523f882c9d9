"""Cluster mode: how long a second IRC client of an account takes to register on the node of
the account's user (local) and on another node, from which it is handed off to that node.

Two nodes on a private Redis and PostgreSQL; the account's first client is on node a, in
``ROOMS`` rooms.  Each round connects a second client to node a, then one to node b, and
times each from the TCP connect to the last line of its join burst (the ``366`` of its last
room): ``CAP LS 302``, ``NICK``, ``USER``, ``CAP REQ``, SASL PLAIN (three round trips), then
``CAP END`` and the welcome and join bursts.  The client then quits.  Printed: the median,
the fastest and the slowest of each, in milliseconds.
Usage: ``.venv/bin/python bench/handoff_bench.py [--rounds 20]``.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer
from tests.support.server import LineClient, ServerProcess

ACCOUNT = "bencher"
PASSWORD = "bench-secret-1"
ROOMS = 3


def node(base: Path, name: str, redis: RedisServer, dsn: str) -> ServerProcess:
    return ServerProcess(
        base / name,
        protocols=("line", "irc"),
        overrides={
            "cluster": {"redis": redis.url, "node": name},
            "storage": {"backend": "postgresql", "dsn": dsn},
            "chat": {"address_limit_exempt": ["127.0.0.0/8"], "login_failure_burst": 1000},
            "irc": {"flood_exempt": ["127.0.0.0/8"]},
        },
    ).start()


def plain() -> str:
    return base64.b64encode(f"{ACCOUNT}\0{ACCOUNT}\0{PASSWORD}".encode()).decode()


def login(port: int, nick: str) -> tuple[LineClient, float]:
    """A client of the account registered on ``port``, and the seconds it took."""
    started = time.perf_counter()
    client = LineClient(port, timeout=15)
    client.send(f"CAP LS 302\r\nNICK {nick}\r\nUSER {nick} 0 * :{nick}\r\nCAP REQ :sasl")
    client.expect(" ACK ")
    client.send("AUTHENTICATE PLAIN")
    client.expect("AUTHENTICATE +")
    client.send(f"AUTHENTICATE {plain()}")
    outcome = client.expect(lambda t: " 903 " in t or " 904 " in t)
    if " 903 " not in outcome:
        raise RuntimeError(outcome)
    client.send("CAP END")
    client.expect(f" 366 {ACCOUNT} #bench{ROOMS - 1} ")
    return client, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        redis = RedisServer().start()
        postgres = PostgresServer().start()
        servers: list[ServerProcess] = []
        try:
            dsn = postgres.new_database()
            a = node(base, "a", redis, dsn)
            servers.append(a)
            b = node(base, "b", redis, dsn)
            servers.append(b)
            setup = LineClient(a.ports["line"])
            setup.expect("*** Choose a nick:")
            setup.send(ACCOUNT)
            setup.send(f"/register {PASSWORD}")
            setup.expect("is now registered")
            setup.close()
            first = LineClient(a.ports["irc"], timeout=15)
            first.send(f"CAP REQ :sasl\r\nNICK {ACCOUNT}\r\nUSER b 0 * :b\r\nAUTHENTICATE PLAIN")
            first.expect("AUTHENTICATE +")
            first.send(f"AUTHENTICATE {plain()}\r\nCAP END")
            first.expect(f" 001 {ACCOUNT} ")
            for i in range(ROOMS):
                first.send(f"JOIN #bench{i}")
                first.expect(f" 366 {ACCOUNT} #bench{i} ")
            times: dict[str, list[float]] = {"local": [], "handed off": []}
            for _ in range(args.rounds):
                for kind, port in (("local", a.ports["irc"]), ("handed off", b.ports["irc"])):
                    client, seconds = login(port, "second")
                    times[kind].append(seconds)
                    client.send("QUIT")
                    client.read_until_closed()
                    client.close()
            first.close()
        finally:
            for server in servers:
                server.kill()
            postgres.destroy()
            redis.destroy()
    print(f"registration of a second client of one account, {args.rounds} rounds, ms:")
    for kind, values in times.items():
        ms = [v * 1000 for v in values]
        print(
            f"  {kind:>10}: median {statistics.median(ms):6.1f}"
            f"  min {min(ms):6.1f}  max {max(ms):6.1f}"
        )


if __name__ == "__main__":
    main()
