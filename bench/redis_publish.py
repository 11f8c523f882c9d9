"""Redis's CPU for one stream entry of a turn's room messages: through the cluster's publish
script (``chatserver.cluster.node.PUBLISH_SCRIPT``) against a plain XADD of the same entry.

Why a node sends a turn's entries for named nodes as plain XADDs (``ClusterNode._send_batch``):
the script copies each argument into a Lua string and joins the entry again.  A private Redis,
one connection, ``--entries`` entries of ``--size`` bytes each way, alternating, the Redis
process's CPU (user + system from ``/proc``) per entry.  Usage:
``.venv/bin/python bench/redis_publish.py [--size 65000] [--entries 400]``; not part of
``make bench``; results in ``bench/README.md`` (cluster mode).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatserver.cluster.node import PUBLISH_SCRIPT
from tests.support.redis import RedisServer

TICK = os.sysconf("SC_CLK_TCK")


def command(*args: object) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Link:
    """One connection, each command answered before the next (a reply's kind is enough)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")

    def call(self, *args: object) -> bytes:
        self.sock.sendall(command(*args))
        return self.reply()

    def reply(self) -> bytes:
        line = self.file.readline()
        if line[:1] == b"$" and int(line[1:]) >= 0:
            return self.file.read(int(line[1:]) + 2)[:-2]
        if line[:1] == b"*":
            for _ in range(int(line[1:])):
                self.reply()
        if line[:1] == b"-":
            raise RuntimeError(line.decode().strip())
        return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=65_000, help="bytes per entry")
    parser.add_argument("--entries", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    redis = RedisServer().start()
    try:
        assert redis.proc is not None
        link = Link(redis.port)
        sha = link.call("SCRIPT", "LOAD", PUBLISH_SCRIPT)
        payload = os.urandom(args.size)
        for _ in range(args.rounds):
            for way in ("script", "xadd"):
                link.call("DEL", "bench:events:n1")
                before = cpu_seconds(redis.proc.pid)
                for seq in range(args.entries):
                    if way == "script":
                        # As ClusterNode._run_publish sends one entry for node n1.
                        link.call(
                            "EVALSHA", sha, 0, "n0", "bench:node:", 200_000, b"n0 1 ",
                            "bench:events:", "bench:nodes", seq, "", "", "n1", payload,
                        )  # fmt: skip
                    else:
                        link.call(
                            "XADD", "bench:events:n1", "MAXLEN", "~", 200_000, "*", "e",
                            b"n0 1 %d %s" % (seq, payload),
                        )  # fmt: skip
                time.sleep(0.3)  # the last tick of CPU time is counted
                spent = cpu_seconds(redis.proc.pid) - before
                print(
                    f"{way:6}: {spent * 1e6 / args.entries:.0f} µs of Redis CPU per"
                    f" {args.size}-byte entry ({args.entries} entries)",
                    flush=True,
                )
    finally:
        redis.destroy()


if __name__ == "__main__":
    main()
