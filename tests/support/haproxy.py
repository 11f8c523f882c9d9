"""HAProxy in front of cluster nodes, configured as ``deploy/haproxy.cfg`` says.

:func:`haproxy_config` takes the deployed file and puts given ports in it: each frontend
binds a loopback port of its own, and each backend lists the given nodes; everything else
(timeouts, balancing, health checks) is the deployed file's.  :class:`HAProxy` runs Debian's
``haproxy`` in the foreground on such a config, never as a system service, and stops it at
the end (and when the process that started it dies).
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

BINARY = shutil.which("haproxy")
MISSING_REASON = "haproxy is not installed (.ci/run installs the Debian package haproxy)"
DEPLOYED = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def affordable_maxconn() -> int:
    """The most connections HAProxy can take with this process's descriptor limit."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 10_000 if hard == resource.RLIM_INFINITY else max(100, (hard - 100) // 2)


def _die_with_parent() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def haproxy_config(
    fronts: Mapping[str, int],
    backends: Mapping[str, Sequence[tuple[str, int]]],
    template: str | None = None,
    maxconn: int | None = None,
) -> str:
    """The deployed config with ``fronts[proto]`` as the port of frontend ``proto`` (on
    127.0.0.1) and ``backends[proto]``'s (name, port) pairs as its servers on 127.0.0.1.
    Frontends and backends not named are left out.  ``maxconn``: the global connection
    limit instead of the deployed one (HAProxy needs two descriptors per connection, and
    will not start if it cannot raise its descriptor limit that far)."""
    source = DEPLOYED.read_text() if template is None else template
    out: list[str] = []
    section: tuple[str, str] | None = None
    for line in source.splitlines():
        words = line.split()
        if words and not line[0].isspace():
            kind = words[0]
            section = (kind, words[1]) if kind in ("frontend", "backend") else None
            if section is not None and section[1] not in (
                fronts if kind == "frontend" else backends
            ):
                section = ("skip", "")
                continue
            out.append(line)
            if kind == "backend":
                indent = "    "
                for name, port in backends[words[1]]:
                    out.append(f"{indent}server {name} 127.0.0.1:{port} check inter 500ms")
            continue
        if section == ("skip", ""):
            continue
        if maxconn is not None and words[:1] == ["maxconn"]:
            out.append(f"    maxconn {maxconn}")
            continue
        if section is not None and words[:1] == ["bind"]:
            out.append(f"    bind 127.0.0.1:{fronts[section[1]]}")
            continue
        if section is not None and section[0] == "backend" and words[:1] == ["server"]:
            continue
        out.append(line)
    return "\n".join(out) + "\n"


class HAProxy:
    def __init__(self, config: str, ports: Sequence[int]) -> None:
        if BINARY is None:
            raise RuntimeError(MISSING_REASON)
        self.dir = Path(tempfile.mkdtemp(prefix="chatserver-haproxy-"))
        self.config = self.dir / "haproxy.cfg"
        self.config.write_text(config)
        self.ports = list(ports)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> HAProxy:
        assert BINARY is not None
        check = subprocess.run(
            [BINARY, "-c", "-f", str(self.config)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refuses its config:\n{check.stdout}{check.stderr}")
        log = open(self.dir / "haproxy.log", "ab")
        # -db: in the foreground, not as a daemon.
        self.proc = subprocess.Popen(
            [BINARY, "-db", "-f", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
            preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + timeout
        for port in self.ports:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"haproxy exited:\n{self.log()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"haproxy did not listen on {port}") from None
                    time.sleep(0.05)
        return self

    def log(self) -> str:
        try:
            return (self.dir / "haproxy.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def destroy(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        with contextlib.suppress(OSError):
            shutil.rmtree(self.dir)
