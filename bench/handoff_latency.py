"""Cluster mode: the latency a handed-off client adds, against a client of the same user on
the account's own node.

Two nodes share a private Redis and a private PostgreSQL (the accounts).  A line-chat
client registers an account on node a and joins a room; a second client of the account
logs in on node b and is handed off to node a (its bytes relayed through Redis both ways).
Each client, with ``/echo on``, says ``--count`` messages in the room one at a time (twice,
alternating, after a warm-up of as many), each time waiting until the server shows it the
message back: the round trip client, server, client, and for the relayed client through
node b and Redis twice each way.  Printed: median, 90th percentile and minimum per client.
Usage: ``.venv/bin/python bench/handoff_latency.py [--count 200]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer
from tests.support.server import LineClient, ServerProcess

PASSWORD = "bench-secret-1"


def round_trips(client: LineClient, tag: str, count: int) -> list[float]:
    times = []
    for i in range(count):
        text = f"{tag}-{i}"
        start = time.perf_counter()
        client.send(text)
        client.expect(lambda line, text=text: line.endswith(f"<alice> {text}"))
        times.append(time.perf_counter() - start)
        # The other client's copy arrives meanwhile; a pause keeps the runs apart.
        time.sleep(0.005)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200, help="messages per client and run")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="handoff-latency-"))
    postgres = PostgresServer().start()
    redis = RedisServer().start()
    servers: list[ServerProcess] = []
    try:
        dsn = postgres.new_database()

        def node(name: str) -> ServerProcess:
            server = ServerProcess(
                tmp / name,
                protocols=("line",),
                overrides={
                    "cluster": {"redis": redis.url, "node": name, "lease": 3.0},
                    "storage": {"backend": "postgresql", "dsn": dsn},
                    "chat": {"address_limit_exempt": ["127.0.0.0/8"]},
                    "line": {"flood_burst": 100_000, "flood_rate": 100_000.0},
                },
            )
            servers.append(server)
            return server.start()

        a, b = node("a"), node("b")
        direct = LineClient(a.ports["line"])
        direct.expect("Choose a nick")
        direct.send("alice")
        direct.expect("You are alice")
        direct.send(f"/register {PASSWORD}")
        direct.expect("now registered")
        direct.send("/join dev")
        direct.expect("now talking in #dev")
        relayed = LineClient(b.ports["line"])
        relayed.expect("Choose a nick")
        relayed.send(f"/identify alice {PASSWORD}")
        relayed.expect("you are in #dev")
        for client in (direct, relayed):
            client.send("/echo on")
            client.expect("echo")
        clients = {"direct (node a)": direct, "relayed (node b to a)": relayed}
        for name, client in clients.items():
            round_trips(client, f"warm-{name[0]}", args.count)
        results: dict[str, list[float]] = {name: [] for name in clients}
        for run in range(2):
            for name, client in clients.items():
                results[name] += round_trips(client, f"{name[0]}{run}", args.count)
        for name, times in results.items():
            times.sort()
            print(
                f"{name}: {len(times)} round trips, median {statistics.median(times) * 1000:.2f} ms,"
                f" p90 {times[int(len(times) * 0.9)] * 1000:.2f} ms, min {times[0] * 1000:.2f} ms"
            )
    finally:
        for server in servers:
            server.kill()
        redis.destroy()
        postgres.destroy()


if __name__ == "__main__":
    main()
