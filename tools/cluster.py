"""`make cluster`: a chatserver cluster on this machine to try, stopped by Ctrl-C.

Starts a private PostgreSQL and Redis (the test suite's own helpers: temporary directories,
free loopback ports, removed at the end), three nodes sharing them, and HAProxy in front
when it is installed (Debian package ``haproxy``): IRC on 6667, XMPP on 5222, line chat on
2323, as one server.  Without HAProxy, connect to the nodes' own ports (printed).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.haproxy import affordable_maxconn
from tests.support.haproxy import haproxy_config as make_haproxy_config
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer
from tests.support.server import write_config

ROOT = Path(__file__).resolve().parent.parent
# Node i listens on these plus i; deploy/haproxy.cfg names the same ports.
BASE_PORTS = {"line": 12323, "irc": 16667, "xmpp": 15222}
FRONT_PORTS = {"line": 2323, "irc": 6667, "xmpp": 5222}


def haproxy_config(nodes: int) -> str:
    """deploy/haproxy.cfg with this machine's ports (the test suite writes its own the same
    way), and a connection limit this process's descriptor limit allows."""
    return make_haproxy_config(
        FRONT_PORTS,
        {proto: [(f"n{i}", base + i) for i in range(nodes)] for proto, base in BASE_PORTS.items()},
        maxconn=affordable_maxconn(),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args()

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM (a service manager, `kill`) stops everything as Ctrl-C does.
    signal.signal(signal.SIGTERM, stop)
    work = Path(tempfile.mkdtemp(prefix="chatserver-cluster-"))
    procs: list[subprocess.Popen[bytes]] = []
    postgres = PostgresServer().start()
    redis = RedisServer().start()
    print(f"PostgreSQL {postgres.dsn()}  Redis {redis.url}  files in {work}")
    try:
        dsn = postgres.new_database()
        # One cloak secret for every node: XMPP occupant ids of a user are then the same
        # whichever node makes them.
        secret = secrets.token_hex(16)
        for i in range(args.nodes):
            name = f"n{i}"
            config = work / f"{name}.toml"
            write_config(
                config,
                {
                    "server": {"listen": ["127.0.0.1"], "name": "cluster.chatserver"},
                    # Behind HAProxy every user comes from one address.
                    "chat": {"max_connections_per_address": 0, "cloak_secret": secret},
                    "storage": {"backend": "postgresql", "dsn": dsn},
                    "cluster": {"redis": redis.url, "node": name, "lease": 5.0},
                    "line": {"port": BASE_PORTS["line"] + i},
                    "irc": {"port": BASE_PORTS["irc"] + i, "tls_port": 0},
                    "xmpp": {"port": BASE_PORTS["xmpp"] + i, "tls_port": 0},
                    "web": {"enabled": False},
                },
            )
            log = open(work / f"{name}.log", "ab")
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "chatserver",
                        "run",
                        "--config",
                        str(config),
                        "--data-dir",
                        str(work / name),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                )
            )
            ports = ", ".join(f"{p} {BASE_PORTS[p] + i}" for p in BASE_PORTS)
            print(f"node {name}: {ports}  (log {work / f'{name}.log'})")
        haproxy = shutil.which("haproxy")
        if haproxy:
            cfg = work / "haproxy.cfg"
            cfg.write_text(haproxy_config(args.nodes))
            procs.append(subprocess.Popen([haproxy, "-f", str(cfg)], cwd=work))
            fronts = ", ".join(f"{p} {port}" for p, port in FRONT_PORTS.items())
            print(f"HAProxy in front: {fronts}")
        else:
            print("HAProxy is not installed (Debian: haproxy): connect to the nodes' ports")
        print("Ctrl-C stops everything.")
        while all(proc.poll() is None for proc in procs):
            time.sleep(0.5)
        print("a process ended: stopping the rest")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        redis.destroy()
        postgres.destroy()
        if os.environ.get("CLUSTER_KEEP_FILES") is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
