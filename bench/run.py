"""The chatserver benchmark: the same scenarios against chatserver and reference servers.

Each run starts one server under test pinned to core 0 and the load generator
(``bench/loadgen.c``, built here into ``bench/build/``) pinned to core 1, both on loopback,
both bounded in time.  The generator registers every client, joins the rooms, and waits; the
driver reads the server's memory and both processes' CPU time, says ``go``, and reads the
result when the last message has reached its last receiver.

    python bench/run.py                  every scenario, every server found (make bench)
    python bench/run.py --smoke          a few seconds, chatserver only (make test runs it)
    python bench/run.py --only fanout    some scenarios (fanout latency rooms capacity mixed slow)
    python bench/run.py --servers chatserver,inspircd

Reference servers come from Debian (ngircd, inspircd, prosody); one that is not installed
shows ``n/a``.  See bench/README.md for the method and the latest table.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import dataclasses
import datetime
import json
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))

from tests.support.ports import free_port  # noqa: E402

BUILD_DIR = BENCH_DIR / "build"
LOADGEN_SOURCE = BENCH_DIR / "loadgen.c"
LOADGEN = BUILD_DIR / "loadgen"
CC = os.environ.get("CC", "gcc")
CFLAGS = ("-O2", "-Wall", "-Wextra")

SERVER_CORE = 0
LOADGEN_CORE = 1
# File descriptors for servers and generator: 10k connections plus room to spare.
NOFILE = 65536
# No server outlives this, even if the driver is killed without a chance to clean up.
SERVER_MAX_SECONDS = 900
PASSWORD = "benchpass1"
XMPP_DOMAIN = "localhost"
MUC_DOMAIN = f"conference.{XMPP_DOMAIN}"

PROTOCOLS = ("irc", "line", "xmpp")


# -- building the generator ---------------------------------------------------------------


def build_loadgen(force: bool = False) -> Path:
    """Compile bench/loadgen.c into bench/build/loadgen when it is missing or stale."""
    if not force and LOADGEN.exists() and LOADGEN.stat().st_mtime >= LOADGEN_SOURCE.stat().st_mtime:
        return LOADGEN
    if shutil.which(CC) is None:
        raise RuntimeError(f"{CC} not found: the load generator needs a C compiler")
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run([CC, *CFLAGS, "-o", str(LOADGEN), str(LOADGEN_SOURCE)], check=True)
    return LOADGEN


# -- processes -----------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _pinned(core: int) -> Callable[[], None]:
    """A preexec_fn: pin to ``core``, die with the driver, and allow many descriptors."""
    cores = {core % (os.cpu_count() or 1)}

    def preexec() -> None:
        os.sched_setaffinity(0, cores)
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
        os.setsid()
        # A pending alarm survives exec: nothing started here outlives the bench for long.
        signal.alarm(SERVER_MAX_SECONDS)

    return preexec


# Servers started and not yet stopped: killed if the driver itself is stopped (a server that
# changes its user, as ngIRCd does, loses the parent-death signal).
_LIVE: set[subprocess.Popen[bytes]] = set()


def _kill_live(*_: object) -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(OSError):
            proc.kill()
    _LIVE.clear()


def _on_signal(signum: int, _frame: object) -> None:
    _kill_live()
    raise SystemExit(128 + signum)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# Seconds after the messages until the server has written the last of their history.
HISTORY_SETTLE = 1.5


def children_cpu_seconds(pid: int) -> float:
    """CPU time so far of the live children of ``pid`` (chatserver's SQLite history writer):
    counted apart, since they do the server's work in another process."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_for_port(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}: {tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not listening on {port}: {tail(log)}") from None
            time.sleep(0.05)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# -- servers under test --------------------------------------------------------------------


class Server:
    """One server process on loopback ports of its own, in a directory of its own."""

    name = ""
    protocols: tuple[str, ...] = ()
    # Sends a room message back to its sender (XMPP MUC does; the generator ignores it).
    startup_timeout = 20.0

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "server.log"
        # Not port 0 probes: the kernel may hand one port to two of them, and two listeners
        # of one server then collide; the suite's allocator never gives a port twice.
        self.ports = {proto: free_port() for proto in self.protocols}
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def available(cls) -> bool:
        raise NotImplementedError

    @classmethod
    def connect_parallel(cls, clients: int) -> int:
        """Registrations in flight at once when connecting many idle clients: the figure
        at which this server registers fastest (measured; see bench/README.md)."""
        return min(clients, 256)

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write the configuration."""

    def start(self) -> None:
        self.prepare()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=self.environment(),
                preexec_fn=_pinned(SERVER_CORE),
            )
        _LIVE.add(self.proc)
        for port in self.ports.values():
            wait_for_port(self.proc, port, self.log, self.startup_timeout)

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _LIVE.discard(proc)
        self.proc = None


class Chatserver(Server):
    name = "chatserver"
    protocols = ("irc", "line", "xmpp")

    @classmethod
    def available(cls) -> bool:
        return True

    def prepare(self) -> None:
        sections: dict[str, dict[str, Any]] = {
            "server": {"listen": ["127.0.0.1"], "name": "bench.chatserver"},
            # The login budget binds loopback too: out of reach, or hundreds of logins in
            # flight from the generator's one address are refused as guesses.
            "chat": {
                "max_connections_per_address": 0,
                "login_failure_burst": 10_000_000,
                "login_failure_period": 0.001,
            },
            # Flood control off or out of reach: the generator floods by design.  Idle
            # clients are pinged after 10 minutes, as in the references' configurations.
            "line": {
                "port": self.ports["line"],
                "flood_burst": 10_000_000,
                "flood_rate": 1e7,
                "idle_timeout": 600.0,
            },
            "irc": {
                "port": self.ports["irc"],
                "tls_port": 0,
                "flood_burst": 0,
                "flood_max_queue": 100_000,
                "ping_interval": 600.0,
            },
            "xmpp": {
                "port": self.ports["xmpp"],
                "tls_port": 0,
                "domain": XMPP_DOMAIN,
                "idle_timeout": 600.0,
                "flood_burst": 100_000,
                "flood_rate": 1e7,
                "flood_max_queue": 100_000,
            },
            # Nothing here is measured over HTTP: no listener on a fixed port to collide.
            "web": {"enabled": False},
        }
        known = chatserver_config_keys()
        lines = []
        for section, values in sections.items():
            if section not in known:
                continue  # a section this version of the server does not have
            lines.append(f"[{section}]")
            for key, value in values.items():
                # A key this version of the server does not have is left out, not refused.
                if key in known.get(section, {key}):
                    lines.append(f"{key} = {toml_value(value)}")
        (self.dir / "chatserver.toml").write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "chatserver",
            "run",
            "--config",
            str(self.dir / "chatserver.toml"),
            "--data-dir",
            str(self.dir / "data"),
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        return env


def chatserver_config_keys() -> dict[str, set[str]]:
    """The keys of each config section of the chatserver in this tree."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from chatserver import config

    sections = {"server": "ServerConfig", "line": "LineConfig", "irc": "IrcConfig"}
    sections["xmpp"] = "XmppConfig"
    sections["web"] = "WebConfig"
    keys = {
        section: {f.name for f in dataclasses.fields(getattr(config, name))}
        for section, name in sections.items()
        if hasattr(config, name)
    }
    keys["chat"] = {f.name for f in dataclasses.fields(config.CoreSettings)}
    return keys


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


class Ngircd(Server):
    name = "ngircd"
    protocols = ("irc",)

    @classmethod
    def available(cls) -> bool:
        return shutil.which("ngircd") is not None

    def prepare(self) -> None:
        (self.dir / "motd").write_text("bench\n")
        (self.dir / "ngircd.conf").write_text(
            f"""[Global]
    Name = bench.ngircd
    Info = bench
    Listen = 127.0.0.1
    Ports = {self.ports["irc"]}
    MotdFile = {self.dir / "motd"}
    PidFile = {self.dir / "ngircd.pid"}
[Limits]
    MaxConnections = 0
    MaxConnectionsIP = 0
    MaxJoins = 0
    MaxNickLength = 30
    # No penalty time: flood throttling off.
    MaxPenaltyTime = 0
    PingTimeout = 600
    PongTimeout = 600
[Options]
    DNS = no
    Ident = no
    PAM = no
"""
        )

    def command(self) -> list[str]:
        return ["ngircd", "--nodaemon", "--config", str(self.dir / "ngircd.conf")]

    @classmethod
    def connect_parallel(cls, clients: int) -> int:
        # ngIRCd's listen backlog is short: past a few connects at once the kernel drops
        # SYNs and clients wait a second to retry (11k/s at 4 at once, under 1k/s at 16).
        return min(clients, 4)


class Inspircd(Server):
    name = "inspircd"
    protocols = ("irc",)

    @classmethod
    def available(cls) -> bool:
        return shutil.which("inspircd") is not None

    def prepare(self) -> None:
        (self.dir / "motd").write_text("bench\n")
        (self.dir / "inspircd.conf").write_text(
            f"""<server name="bench.inspircd" description="bench" network="bench">
<admin name="bench" nick="bench" email="bench@localhost">
<bind address="127.0.0.1" port="{self.ports["irc"]}" type="clients">
<pid file="{self.dir / "inspircd.pid"}">
<files motd="{self.dir / "motd"}">
<performance softlimit="{NOFILE - 100}" somaxconn="4096" clonesonconnect="no" nouserdns="yes"
             quietbursts="yes" timeskipwarn="0">
<connect name="bench" allow="*" maxchans="1000" timeout="60" pingfreq="600"
         hardsendq="1M" softsendq="1M" recvq="1M" threshold="1000000"
         commandrate="1000000000" fakelag="no" localmax="1000000" globalmax="1000000"
         maxconnwarn="no" resolvehostnames="no" useident="no" limit="1000000">
<limits maxnick="30" maxchan="60">
<dns server="127.0.0.1" timeout="1">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default"
     target="{self.dir / "inspircd.log"}">
"""
        )

    @classmethod
    def connect_parallel(cls, clients: int) -> int:
        # InspIRCd completes registrations on its once-a-second timer: every client at once.
        return clients

    def command(self) -> list[str]:
        return [
            "inspircd",
            "--nofork",
            "--runasroot",
            f"--config={self.dir / 'inspircd.conf'}",
        ]


class Prosody(Server):
    name = "prosody"
    protocols = ("xmpp",)

    @classmethod
    def available(cls) -> bool:
        return shutil.which("prosody") is not None

    def prepare(self) -> None:
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        (self.dir / "prosody.cfg.lua").write_text(
            f"""run_as_root = true
pidfile = "{self.dir / "prosody.pid"}"
data_path = "{data}"
log = {{ warn = "{self.dir / "prosody.log"}" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.ports["xmpp"]} }}
c2s_direct_tls_ports = {{}}
s2s_ports = {{}}
component_ports = {{}}
http_ports = {{}}
https_ports = {{}}
network_backend = "epoll"
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "register"; "posix" }}
modules_disabled = {{ "s2s"; "offline"; "tls" }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
allow_registration = true
authentication = "internal_hashed"
storage = "internal"
VirtualHost "{XMPP_DOMAIN}"
Component "{MUC_DOMAIN}" "muc"
    restrict_room_creation = false
    muc_room_locking = false
"""
        )

    def command(self) -> list[str]:
        return ["prosody", "-F", "--config", str(self.dir / "prosody.cfg.lua")]


SERVERS: dict[str, type[Server]] = {
    cls.name: cls for cls in (Chatserver, Ngircd, Inspircd, Prosody)
}
REFERENCES = {"irc": ("ngircd", "inspircd"), "line": (), "xmpp": ("prosody",)}


# -- client scripts --------------------------------------------------------------------------


def irc_script(join: bool) -> list[str]:
    lines = [
        "delim n",
        "irc_ping 1",
        r"send NICK %n\r\nUSER %n 0 * :bench\r\n",
        r"expect \s001\s",
    ]
    if join:
        lines += [r"send JOIN #%r\r\n", r"expect \s366\s"]
    lines.append(r"msg PRIVMSG #%r :%m\r\n")
    return lines


def line_script(join: bool) -> list[str]:
    lines = ["delim n", r"send %n\r\n"]
    if join:
        lines += [r"send /join %r\r\n", "expect now talking in #"]
    else:
        lines.append("expect You are ")
    lines.append(r"msg %m\r\n")
    return lines


def xmpp_script(join: bool) -> list[str]:
    stream = (
        f"send <?xml version='1.0'?><stream:stream to='{XMPP_DOMAIN}' xmlns='jabber:client'"
        " xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    )
    lines = [
        "delim g",
        f"password {PASSWORD}",
        stream,
        "expect </stream:features>",
        # In-band registration (XEP-0077) on both servers, so no account tool runs per user.
        "send <iq type='set' id='benchreg'><query xmlns='jabber:iq:register'>"
        "<username>%n</username><password>%p</password></query></iq>",
        "expect benchreg",
        "send <auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%B</auth>",
        "expect <success",
        stream,
        "expect </stream:features>",
        "send <iq type='set' id='benchbind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        "<resource>bench</resource></bind></iq>",
        "expect </jid>",
    ]
    if join:
        lines += [
            f"send <presence to='%r@{MUC_DOMAIN}/%n'><x xmlns='http://jabber.org/protocol/muc'>"
            "<history maxstanzas='0'/></x></presence>",
            # The subject comes last in a MUC join, after every presence.
            "expect <subject",
        ]
    else:
        lines += ["send <presence/>"]
    lines.append(f"msg <message to='%r@{MUC_DOMAIN}' type='groupchat'><body>%m</body></message>")
    return lines


SCRIPTS: dict[str, Callable[[bool], list[str]]] = {
    "irc": irc_script,
    "line": line_script,
    "xmpp": xmpp_script,
}


# -- one run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    protocol: str
    count: int
    slow: bool = False


@dataclass(frozen=True)
class Workload:
    groups: tuple[Group, ...]
    room_size: int
    senders_per_room: int
    per_sender: int
    # Messages each sender may have in flight (sent, not yet received by every member).
    window: int = 50
    rate: float = 0.0
    join: bool = True
    setup_timeout: float = 120.0
    run_timeout: float = 180.0
    connect_parallel: int = 256
    settle_ms: int = 300
    # Filler bytes in each message (the slow reader needs volume to pass its limit).
    pad: int = 0

    @property
    def clients(self) -> int:
        return sum(g.count for g in self.groups)


@dataclass
class RunResult:
    server: str
    ready: dict[str, Any] = field(default_factory=dict)
    done: dict[str, Any] = field(default_factory=dict)
    server_cpu: float = 0.0  # share of one core during the messages
    # The same for the server's child processes (chatserver's history writer).
    children_cpu: float = 0.0
    # CPU seconds of the server process and of its children per message sent.
    server_us_per_message: float = 0.0
    children_us_per_message: float = 0.0
    loadgen_cpu: float = 0.0
    rss_before_kib: int = 0
    rss_after_kib: int = 0  # all registered (and joined)
    rss_end_kib: int = 0  # after the messages
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "ready": self.ready,
            "done": self.done,
            "server_cpu": self.server_cpu,
            "children_cpu": self.children_cpu,
            "server_us_per_message": self.server_us_per_message,
            "children_us_per_message": self.children_us_per_message,
            "loadgen_cpu": self.loadgen_cpu,
            "rss_before_kib": self.rss_before_kib,
            "rss_after_kib": self.rss_after_kib,
            "rss_end_kib": self.rss_end_kib,
            "error": self.error,
        }


def loadgen_config(work: Workload, server: Server) -> str:
    lines = [
        "host 127.0.0.1",
        f"per_sender {work.per_sender}",
        f"window {work.window}",
        f"rate {work.rate}",
        # At a fixed rate, latency is what counts: time it by the kernel's arrival stamps.
        f"rx_timestamps {1 if work.rate > 0 else 0}",
        f"room_size {work.room_size}",
        f"senders_per_room {work.senders_per_room}",
        f"connect_parallel {work.connect_parallel}",
        f"setup_timeout {work.setup_timeout}",
        f"run_timeout {work.run_timeout}",
        f"settle_ms {work.settle_ms}",
        f"pad {work.pad}",
        "wait_go 1",
        "hold 1",
    ]
    for group in work.groups:
        lines += [
            f"group {group.protocol}",
            f"port {server.ports[group.protocol]}",
            f"count {group.count}",
        ]
        if group.slow:
            # A tiny receive window, so the server's own buffers fill at once.
            lines += ["slow 1", "rcvbuf 4096"]
        lines += SCRIPTS[group.protocol](work.join)
        lines.append("end")
    return "\n".join(lines) + "\n"


class LineReader:
    """Lines from a pipe, with a deadline."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def read_line(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], min(remaining, 1.0))
            if not ready:
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()


def start_profiler(pid: int, output: Path) -> subprocess.Popen[bytes] | None:
    """py-spy sampling ``pid`` (on the generator's core) until it gets SIGINT."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        return None
    output.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(output),
            "--nonblocking",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_pinned(LOADGEN_CORE),
    )
    time.sleep(0.5)
    return proc


def stop_profiler(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def profile_summary(path: Path, top: int = 20) -> str:
    """The functions with the most samples in a py-spy raw (collapsed) profile."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return "(no samples)"
    lines = [f"{total} samples", "", "self  total  function"]
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * count / total:4.1f}% {100 * inclusive[frame] / total:5.1f}%  {frame}")
    lines += ["", "total  function (inclusive, top)"]
    for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * count / total:5.1f}%  {frame}")
    return "\n".join(lines)


def run_workload(
    server_cls: type[Server], work: Workload, workdir: Path, profile: Path | None = None
) -> RunResult:
    """Start a fresh server, run the workload against it, stop it.

    With ``profile``, py-spy samples a Python server while the messages flow (while the
    clients connect and register, for a workload without messages).
    """
    result = RunResult(server_cls.name)
    server = server_cls(workdir)
    loadgen: subprocess.Popen[bytes] | None = None
    profiler: subprocess.Popen[bytes] | None = None
    try:
        server.start()
        time.sleep(0.2)
        result.rss_before_kib = rss_kib(server.pid)
        if profile is not None and not work.senders_per_room:
            profiler = start_profiler(server.pid, profile)
        config = workdir / "loadgen.cfg"
        config.write_text(loadgen_config(work, server))
        errors = open(workdir / "loadgen.err", "wb")
        loadgen = subprocess.Popen(
            [str(LOADGEN), str(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            preexec_fn=_pinned(LOADGEN_CORE),
        )
        errors.close()
        assert loadgen.stdout is not None and loadgen.stdin is not None
        reader = LineReader(loadgen.stdout.fileno())
        line = reader.read_line(work.setup_timeout + 30)
        if line is None:
            raise RuntimeError("the generator did not get ready: " + tail(workdir / "loadgen.err"))
        result.ready = json.loads(line)
        if result.ready["ready"] != work.clients:
            raise RuntimeError(
                f"{result.ready['ready']} of {work.clients} clients ready: "
                + tail(workdir / "loadgen.err", 4)
            )
        result.rss_after_kib = rss_kib(server.pid)
        if profile is not None and profiler is None:
            profiler = start_profiler(server.pid, profile)
        cpu_server, cpu_children, cpu_gen, t0 = (
            cpu_seconds(server.pid),
            children_cpu_seconds(server.pid),
            cpu_seconds(loadgen.pid),
            time.monotonic(),
        )
        loadgen.stdin.write(b"go\n")
        loadgen.stdin.flush()
        line = reader.read_line(work.run_timeout + 30)
        if line is None:
            raise RuntimeError("the generator did not finish: " + tail(workdir / "loadgen.err"))
        wall = time.monotonic() - t0
        if server.alive():
            result.server_cpu = (cpu_seconds(server.pid) - cpu_server) / wall
            result.children_cpu = (children_cpu_seconds(server.pid) - cpu_children) / wall
        result.loadgen_cpu = (cpu_seconds(loadgen.pid) - cpu_gen) / wall
        result.done = json.loads(line)
        messages = result.done.get("messages") or 0
        if messages and server.alive():
            # Per message, once the last history batch is written (a flush interval, 1 s by
            # default, and its write): every message's whole cost, wherever it is spent.
            time.sleep(HISTORY_SETTLE)
            spent = cpu_seconds(server.pid) - cpu_server
            result.server_us_per_message = spent / messages * 1e6
            spent = children_cpu_seconds(server.pid) - cpu_children
            result.children_us_per_message = spent / messages * 1e6
        if server.alive():
            result.rss_end_kib = rss_kib(server.pid)
        stop_profiler(profiler)
        profiler = None
        loadgen.stdin.write(b"quit\n")
        loadgen.stdin.flush()
        if not server.alive():
            raise RuntimeError("the server died: " + tail(server.log))
        if result.done.get("timeout"):
            result.error = "timeout"
        if result.done.get("closed"):
            result.error = f"the server closed {result.done['closed']} clients that kept reading"
            if result.done.get("timeout"):
                result.error += " (then timeout)"
    except (RuntimeError, OSError, ValueError) as err:
        result.error = str(err).strip() or type(err).__name__
    finally:
        stop_profiler(profiler)
        if loadgen is not None:
            with contextlib.suppress(OSError):
                if loadgen.stdin is not None:
                    loadgen.stdin.close()
            try:
                loadgen.wait(10)
            except subprocess.TimeoutExpired:
                loadgen.kill()
                loadgen.wait()
        server.stop()
    return result


# -- scenarios -------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: a figure for each server, and which way is better."""

    scenario: str
    protocol: str
    metric: str
    unit: str
    higher_is_better: bool
    values: dict[str, float | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


# The fan-out size at which --profile samples chatserver (IRC).
PROFILE_N = 500
# ... for this many times the scenario's messages.
PROFILE_LENGTH = 5
# Filler per message in the slow-reader scenario: 300 bytes keeps IRC lines under 512.
SLOW_PAD = 300


@dataclass
class Sizes:
    fanout_n: tuple[int, ...]
    xmpp_fanout_n: tuple[int, ...]
    fanout_messages: Callable[[str, int], int]
    fanout_senders: int
    # Messages in flight per sender: each server is measured at each, and keeps its best.
    fanout_windows: tuple[int, ...]
    latency_n: int
    latency_rate: float
    latency_seconds: float
    rooms_clients: int
    rooms_size: int
    rooms_per_sender: int
    capacity_n: tuple[int, ...]
    xmpp_capacity_n: tuple[int, ...]
    mixed_n: int
    mixed_messages: int
    slow_n: int
    slow_messages: int
    # XMPP servers are slower: fewer clients and messages, so the reference ends in time.
    xmpp_rooms_per_sender: int = 30
    xmpp_slow_n: int = 20
    xmpp_slow_messages: int = 20_000
    # Filler per message there: volume, so the reader passes the server's limit.
    slow_pad: int = SLOW_PAD
    setup_timeout: float = 120.0


def _full_fanout_messages(protocol: str, n: int) -> int:
    # A fixed total per (protocol, N), the same for every server: enough deliveries to last
    # a second or more on the fastest server, few enough that the slowest ends in time.
    if protocol == "xmpp":
        return {10: 20_000, 100: 4000}.get(n, 1000)
    return {10: 400_000, 100: 50_000, 500: 10_000}.get(n, 6000)


FULL = Sizes(
    fanout_n=(10, 100, 500, 1000),
    xmpp_fanout_n=(10, 100, 500),
    fanout_messages=_full_fanout_messages,
    fanout_senders=10,
    fanout_windows=(50, 200),
    latency_n=100,
    latency_rate=100.0,
    latency_seconds=5.0,
    rooms_clients=1000,
    rooms_size=10,
    rooms_per_sender=100,
    capacity_n=(1000, 5000, 10_000),
    xmpp_capacity_n=(1000, 5000, 10_000),
    mixed_n=300,
    mixed_messages=6000,
    slow_n=100,
    slow_messages=30_000,
)

SMOKE = Sizes(
    fanout_n=(10,),
    xmpp_fanout_n=(10,),
    fanout_messages=lambda protocol, n: 200,
    fanout_senders=2,
    fanout_windows=(50,),
    latency_n=10,
    latency_rate=100.0,
    latency_seconds=0.5,
    rooms_clients=40,
    rooms_size=10,
    rooms_per_sender=10,
    capacity_n=(100,),
    xmpp_capacity_n=(20,),
    mixed_n=12,
    mixed_messages=300,
    slow_n=10,
    slow_messages=10_000,
    xmpp_rooms_per_sender=10,
    xmpp_slow_n=10,
    xmpp_slow_messages=10_000,
    # Small messages: the smoke run checks that nobody else loses anything, not the limit.
    slow_pad=0,
    setup_timeout=20.0,
)


class Bench:
    def __init__(
        self,
        sizes: Sizes,
        servers: Sequence[str],
        protocols: Sequence[str],
        workdir: Path,
        log: Callable[[str], None],
        profile: bool = False,
    ) -> None:
        self.sizes = sizes
        # py-spy on chatserver during the IRC fan-out at PROFILE_N (or the largest N below).
        self.profile = profile
        self.profiles: dict[str, str] = {}
        self.servers = list(servers)
        self.protocols = list(protocols)
        self.workdir = workdir
        self.log = log
        self.rows: list[Row] = []
        self.runs: list[dict[str, Any]] = []
        self._count = 0

    # Which servers speak a protocol, in table order: chatserver first.
    def servers_for(self, protocol: str) -> list[str]:
        names = ["chatserver", *REFERENCES[protocol]]
        return [name for name in names if name in self.servers]

    def run(self, label: str, server: str, work: Workload, *, profile: bool = False) -> RunResult:
        self._count += 1
        cls = SERVERS[server]
        if not cls.available():
            result = RunResult(server, error="n/a")
            return result
        # Each server gets its own best number of registrations in flight (see Server).
        work = dataclasses.replace(work, connect_parallel=cls.connect_parallel(work.clients))
        started = time.monotonic()
        rundir = self.workdir / f"{self._count:03d}-{server}"
        profile_path = rundir / "profile.txt" if profile else None
        result = run_workload(cls, work, rundir, profile_path)
        took = time.monotonic() - started
        if profile_path is not None and profile_path.exists():
            self.profiles[f"{label} [{server}]"] = profile_summary(profile_path)
        done = result.done
        if not result.ok:
            summary = f"FAILED: {result.error}"
        elif not done.get("messages"):
            summary = (
                f"{result.ready.get('connect_per_s', 0):,.0f} registered/s,"
                f" RSS {result.rss_before_kib:,} -> {result.rss_after_kib:,} KiB"
            )
        else:
            summary = (
                f"{done.get('deliveries_per_s', 0):,.0f} deliveries/s, lost {done.get('lost')},"
                f" dup {done.get('duplicates')}, server cpu {result.server_cpu:.0%}"
                f" ({result.server_us_per_message:.2f} µs/message)"
            )
            if result.children_cpu:
                summary += (
                    f" + children {result.children_cpu:.0%}"
                    f" ({result.children_us_per_message:.2f} µs/message)"
                )
            summary += f", generator cpu {result.loadgen_cpu:.0%}"
        self.log(f"  {label} [{server}] {summary} ({took:.1f}s)")
        self.runs.append({"label": label, **result.as_dict()})
        return result

    def add(self, row: Row) -> None:
        self.rows.append(row)

    @staticmethod
    def profile_n(ns: Sequence[int]) -> int:
        below = [n for n in ns if n <= PROFILE_N]
        return max(below) if below else min(ns)

    # (a) fan-out
    def fanout(self) -> None:
        for protocol in self.protocols:
            ns = self.sizes.xmpp_fanout_n if protocol == "xmpp" else self.sizes.fanout_n
            for n in ns:
                senders = min(self.sizes.fanout_senders, n)
                messages = self.sizes.fanout_messages(protocol, n)
                work = Workload(
                    groups=(Group(protocol, n),),
                    room_size=n,
                    senders_per_room=senders,
                    per_sender=messages // senders,
                    setup_timeout=self.sizes.setup_timeout,
                )
                row = Row(
                    "fan-out",
                    protocol,
                    f"N={n}, S={senders}, {messages} msgs",
                    "deliveries/s",
                    True,
                )
                for server in self.servers_for(protocol):
                    # Each server at the window that suits it best: more in flight helps a
                    # server that batches, and slows InspIRCd down.
                    best: RunResult | None = None
                    for window in self.sizes.fanout_windows:
                        res = self.run(
                            f"fan-out {protocol} N={n} window {window}",
                            server,
                            dataclasses.replace(work, window=window),
                        )
                        if best is None or (
                            res.ok
                            and (
                                not best.ok
                                or res.done["deliveries_per_s"] > best.done["deliveries_per_s"]
                            )
                        ):
                            best = res
                    assert best is not None
                    self.record(row, server, best, lambda r: r.done["deliveries_per_s"])
                self.add(row)
                if self.profile and protocol == "irc" and n == self.profile_n(ns):
                    # A longer run of chatserver alone, sampled by py-spy; not in the table.
                    longer = dataclasses.replace(
                        work,
                        per_sender=work.per_sender * PROFILE_LENGTH,
                        window=max(self.sizes.fanout_windows),
                    )
                    self.run(f"profile irc N={n}", "chatserver", longer, profile=True)

    # (b) latency at a fixed rate
    def latency(self) -> None:
        n, rate = self.sizes.latency_n, self.sizes.latency_rate
        senders = min(10, n)
        per_sender = max(1, int(rate * self.sizes.latency_seconds / senders))
        for protocol in self.protocols:
            work = Workload(
                groups=(Group(protocol, n),),
                room_size=n,
                senders_per_room=senders,
                per_sender=per_sender,
                rate=rate,
                window=1_000_000,
                setup_timeout=self.sizes.setup_timeout,
            )
            rows = {
                q: Row("latency", protocol, f"{q} at {rate:g} msg/s, N={n}", "ms", False)
                for q in ("p50", "p99", "max")
            }
            for server in self.servers_for(protocol):
                res = self.run(f"latency {protocol}", server, work)
                for q, row in rows.items():
                    self.record(row, server, res, lambda r, q=q: r.done["latency_us"][q] / 1000)
            for row in rows.values():
                self.add(row)

    # (c) many rooms
    def rooms(self) -> None:
        s = self.sizes
        for protocol in self.protocols:
            work = Workload(
                groups=(Group(protocol, s.rooms_clients),),
                room_size=s.rooms_size,
                senders_per_room=s.rooms_size,
                per_sender=s.xmpp_rooms_per_sender if protocol == "xmpp" else s.rooms_per_sender,
                window=4,
                setup_timeout=s.setup_timeout,
            )
            row = Row(
                "many rooms",
                protocol,
                f"{s.rooms_clients} clients, rooms of {s.rooms_size}, all sending",
                "deliveries/s",
                True,
            )
            for server in self.servers_for(protocol):
                res = self.run(f"rooms {protocol}", server, work)
                self.record(row, server, res, lambda r: r.done["deliveries_per_s"])
            self.add(row)
            if self.profile and protocol == "irc":
                longer = dataclasses.replace(work, per_sender=work.per_sender * PROFILE_LENGTH)
                self.run("profile irc many rooms", "chatserver", longer, profile=True)

    # (d) capacity
    def capacity(self) -> None:
        for protocol in self.protocols:
            ns = self.sizes.xmpp_capacity_n if protocol == "xmpp" else self.sizes.capacity_n
            for n in ns:
                rate = Row("capacity", protocol, f"{n} idle: registered", "conn/s", True)
                memory = Row("capacity", protocol, f"{n} idle: RSS per connection", "KiB", False)
                for server in self.servers_for(protocol):
                    work = Workload(
                        groups=(Group(protocol, n),),
                        room_size=n,
                        senders_per_room=0,
                        per_sender=0,
                        join=False,
                        setup_timeout=max(self.sizes.setup_timeout, 300.0),
                        settle_ms=1000,
                    )
                    res = self.run(f"capacity {protocol} {n}", server, work)
                    self.record(rate, server, res, lambda r: r.ready["connect_per_s"])
                    self.record(
                        memory,
                        server,
                        res,
                        lambda r, n=n: (r.rss_after_kib - r.rss_before_kib) / n,
                    )
                self.add(rate)
                self.add(memory)
                if self.profile and protocol == "irc" and n == max(ns):
                    self.run(f"profile irc registration {n}", "chatserver", work, profile=True)

    # (e) a mixed room
    def mixed(self) -> None:
        s = self.sizes
        third = s.mixed_n // 3
        groups = tuple(Group(p, third) for p in PROTOCOLS if p in self.protocols)
        if len(groups) < 2 or "chatserver" not in self.servers:
            return
        n = sum(g.count for g in groups)
        senders = min(9, n)
        work = Workload(
            groups=groups,
            room_size=n,
            senders_per_room=senders,
            per_sender=s.mixed_messages // senders,
            setup_timeout=s.setup_timeout,
        )
        names = "+".join(g.protocol for g in groups)
        row = Row("mixed room", names, f"N={n}, a third each, S={senders}", "deliveries/s", True)
        res = self.run(f"mixed {names}", "chatserver", work)
        self.record(row, "chatserver", res, lambda r: r.done["deliveries_per_s"])
        self.add(row)

    # slow reader
    def slow(self) -> None:
        s = self.sizes
        for protocol in self.protocols:
            n, messages = (
                (s.xmpp_slow_n, s.xmpp_slow_messages)
                if protocol == "xmpp"
                else (s.slow_n, s.slow_messages)
            )
            senders = min(10, n)
            base = Workload(
                groups=(Group(protocol, n),),
                room_size=n + 1,
                senders_per_room=senders,
                per_sender=messages // senders,
                pad=s.slow_pad,
                setup_timeout=s.setup_timeout,
            )
            slowed = dataclasses.replace(
                base, groups=(Group(protocol, n), Group(protocol, 1, slow=True))
            )
            label = f"N={n}+1 never reading"
            rate_row = Row("slow reader", protocol, f"{label}: others' rate", "deliveries/s", True)
            share_row = Row(
                "slow reader", protocol, f"{label}: others' rate vs none slow", "%", True
            )
            # Memory the server took on while the reader lagged: bounded (a few MiB at most)
            # when the server drops it at its limit, the whole backlog when it never does.
            drop_row = Row(
                "slow reader", protocol, f"{label}: extra RSS vs none slow", "KiB", False
            )
            for server in self.servers_for(protocol):
                without = self.run(f"slow {protocol} baseline", server, base)
                res = self.run(f"slow {protocol}", server, slowed)
                self.record(rate_row, server, res, lambda r: r.done["deliveries_per_s"])
                if without.ok and res.ok and without.done["deliveries_per_s"]:
                    share_row.values[server] = (
                        100.0 * res.done["deliveries_per_s"] / without.done["deliveries_per_s"]
                    )
                else:
                    share_row.values[server] = None
                    share_row.notes[server] = "fail"
                grown = without.rss_end_kib - without.rss_after_kib if without.ok else 0
                self.record(
                    drop_row, server, res, lambda r, g=grown: r.rss_end_kib - r.rss_after_kib - g
                )
                if res.ok and not res.done.get("slow_disconnected"):
                    drop_row.notes[server] = "NOT DROPPED"
            self.add(rate_row)
            self.add(share_row)
            self.add(drop_row)

    def record(
        self, row: Row, server: str, res: RunResult, metric: Callable[[RunResult], float]
    ) -> None:
        if not res.ok:
            row.values[server] = None
            row.notes[server] = "n/a" if res.error == "n/a" else "fail"
            return
        done = res.done
        if done and (done.get("lost") or done.get("duplicates") or done.get("misrouted")):
            row.notes[server] = "LOSSY"
        row.values[server] = metric(res)

    def integrity_failures(self) -> list[str]:
        """Runs of chatserver that lost, duplicated or misrouted a message, or failed."""
        problems = []
        for run in self.runs:
            if run["server"] != "chatserver":
                continue
            done = run["done"]
            if run["error"]:
                problems.append(f"{run['label']}: {run['error']}")
            elif done.get("lost") or done.get("duplicates") or done.get("misrouted"):
                problems.append(
                    f"{run['label']}: lost {done['lost']}, duplicates {done['duplicates']},"
                    f" misrouted {done['misrouted']}"
                )
        return problems

    def archive(self) -> None:
        """History queries with a million stored messages (chatserver only; see
        bench/history_bench.py)."""
        import history_bench

        if "chatserver" not in self.servers:
            return
        server = Chatserver(self.workdir / "archive")
        scale = 0.01 if self.sizes is SMOKE else 1.0
        figures = history_bench.run(server, ROOT, PASSWORD, XMPP_DOMAIN, scale)
        self.log(history_bench.summary(figures))
        stored = f"{figures.rows / 1e6:g}M stored"
        for protocol, metric, values in (
            ("irc", f"CHATHISTORY LATEST #room 100, {stored}, p99", figures.irc_room_ms),
            ("irc", f"CHATHISTORY LATEST nick 100, {stored}, p99", figures.irc_private_ms),
            ("xmpp", f"MAM page of 50, {stored}, p99", figures.mam_ms),
        ):
            row = Row("archive", protocol, metric, "ms", False)
            row.values["chatserver"] = history_bench.p(values, 0.99)
            self.add(row)
        row = Row("archive", "-", "database bytes per stored message", "bytes", False)
        row.values["chatserver"] = figures.bytes_per_message
        self.add(row)


SCENARIOS = ("fanout", "latency", "rooms", "capacity", "mixed", "slow", "archive")


# -- the table -------------------------------------------------------------------------------


def fmt(value: float | None, note: str | None = None) -> str:
    if value is None:
        return note or "n/a"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {note}" if note else text


def table(rows: Sequence[Row], servers: Sequence[str]) -> str:
    refs = [name for name in ("ngircd", "inspircd", "prosody") if name in servers]
    head = ["scenario", "proto", "measure", "unit", "chatserver", *refs]
    head += [f"cs/{name}" for name in refs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        speaks = set(REFERENCES.get(row.protocol, ()))
        cells = [
            row.scenario,
            row.protocol,
            row.metric,
            row.unit + ("" if row.higher_is_better else " (lower better)"),
            fmt(row.values.get("chatserver"), row.notes.get("chatserver")),
        ]
        ratios = []
        for ref in refs:
            if ref not in speaks:
                cells.append("")
                ratios.append("")
                continue
            cells.append(fmt(row.values.get(ref), row.notes.get(ref)))
            ours, theirs = row.values.get("chatserver"), row.values.get(ref)
            if ours is None or theirs is None or theirs == 0:
                ratios.append("n/a")
            else:
                ratios.append(f"{ours / theirs:.2f}x")
        lines.append("| " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


def cpu_table(runs: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| run | server | deliveries | lost | dup | server CPU | generator CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        done = run["done"]
        if run["error"]:
            lines.append(f"| {run['label']} | {run['server']} | {run['error'][:60]} | | | | |")
            continue
        lines.append(
            f"| {run['label']} | {run['server']} | {done.get('deliveries', 0):,} |"
            f" {done.get('lost')} | {done.get('duplicates')} | {run['server_cpu']:.0%} |"
            f" {run['loadgen_cpu']:.0%} |"
        )
    return "\n".join(lines)


# -- command line ----------------------------------------------------------------------------


@contextlib.contextmanager
def work_directory(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="chatbench-") as tmp:
        yield Path(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds, chatserver only")
    parser.add_argument("--only", default="", help="comma-separated: " + ",".join(SCENARIOS))
    parser.add_argument("--servers", default="", help="comma-separated: " + ",".join(SERVERS))
    parser.add_argument("--protocols", default="", help="comma-separated: irc,line,xmpp")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    parser.add_argument("--output", type=Path, help="write the table (Markdown) here")
    parser.add_argument("--keep", type=Path, help="keep configs and logs in this directory")
    parser.add_argument(
        "--profile",
        action="store_true",
        help=f"py-spy chatserver (IRC): fan-out at N={PROFILE_N}, many rooms, registration",
    )
    parser.add_argument("--build-only", action="store_true", help="compile the generator only")
    args = parser.parse_args(argv)

    build_loadgen()
    if args.build_only:
        return 0
    atexit.register(_kill_live)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    sizes = SMOKE if args.smoke else FULL
    servers = [s for s in args.servers.split(",") if s] or (
        ["chatserver"] if args.smoke else list(SERVERS)
    )
    for name in servers:
        if name not in SERVERS:
            parser.error(f"unknown server {name}")
    protocols = [p for p in args.protocols.split(",") if p] or list(PROTOCOLS)
    scenarios = [s for s in args.only.split(",") if s] or list(SCENARIOS)
    if args.smoke and not args.only:
        scenarios = ["fanout", "mixed", "slow"]
    for name in scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name}")

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    missing = [name for name in servers if not SERVERS[name].available()]
    if missing:
        log(f"not installed (shown as n/a): {', '.join(missing)}")
    started = time.monotonic()
    with work_directory(args.keep) as workdir:
        bench = Bench(sizes, servers, protocols, workdir, log, profile=args.profile)
        for name in scenarios:
            log(f"== {name}")
            getattr(bench, name)()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"chatserver benchmark, {stamp}, {os.cpu_count()} cores; server on core {SERVER_CORE},"
        f" generator on core {LOADGEN_CORE}; {time.monotonic() - started:.0f}s\n\n"
        + table(bench.rows, servers)
        + "\n\nEvery run (CPU: share of one core while the messages flowed):\n\n"
        + cpu_table(bench.runs)
        + "\n"
    )
    for label, summary in bench.profiles.items():
        text += f"\npy-spy profile of {label} (self, inclusive):\n\n```\n{summary}\n```\n"
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"date": stamp, "rows": [r.__dict__ for r in bench.rows], "runs": bench.runs},
                indent=1,
            )
        )
    problems = bench.integrity_failures()
    for problem in problems:
        log(f"chatserver: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
