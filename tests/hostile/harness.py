"""The battery's environment: one real server per protocol module, the bystanders beside it,
and the checks made after every test (server up, memory bounded, no traceback in the log,
bystanders unaffected), plus the count of cases run."""

from __future__ import annotations

import json
import os
import select
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.hostile.bystanders import Window
from tests.hostile.clients import ATTACKER, BYSTANDER, VICTIM, Closed, LineUser, connect, keep
from tests.support.server import ServerProcess, free_port

REPO = Path(__file__).resolve().parents[2]

# Cases run per protocol (generated inputs included), reported at the end of the session.
CASES: Counter[str] = Counter()
# (test id, the bystanders' window, the server's peak memory in KiB) for every test.
WINDOWS: list[tuple[str, Window, int]] = []
# (protocol, all of a module's bystander messages, the module's baseline).
OVERALL: list[tuple[str, Window, Window]] = []
# Figures worth reporting (how long a slow reader took to be dropped...).
NOTES: list[str] = []

# The server may grow by this much over its size once settled (peak resident set, VmHWM)
# during the whole module: every per-connection buffer is bounded far below it (IRC
# sendq 64 KiB in the test config, line backlog 1 MiB, XMPP stanzas 256 KiB), so only a
# leak or an unbounded buffer can reach it.
RSS_GROWTH_LIMIT_KB = 96 * 1024

# Bystander latency may grow to FACTOR times its quiet baseline.  On loopback the
# baseline is a fraction of a millisecond, where scheduler noise on a busy 2-core machine
# alone is a few milliseconds; so the bound never goes below the floors.  Median and p95
# are judged over windows of at least MIN_SAMPLES messages (a test of 0.1 s sees two) and
# over the whole module; the worst single message, in every window.  Other processes (other
# test runs on the machine) delay every message by what their load steals, attack or no
# attack: each bound grows by what the control pair's messages took over the same window
# (their median, p95, worst) on a second server that nobody attacks; and by the time the
# attacked server spent ready to run but waiting for a CPU during the window (its threads'
# run-queue wait, /proc/<pid>/task/*/schedstat): an attack's work takes longer the smaller
# the share of a core the machine leaves the server.  On an idle machine both are about
# nothing, and the bounds are the bare ones.
LATENCY_FACTOR = 4.0
MEDIAN_FLOOR = 0.010
P95_FLOOR = 0.050
WORST_FLOOR = 0.5
MIN_SAMPLES = 20


def count(protocol: str, cases: int = 1) -> None:
    CASES[protocol] += cases


def status_kb(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` figure in KiB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def runqueue_wait(pid: int) -> float:
    """Seconds the threads of ``pid`` have spent runnable but waiting for a CPU."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) a process has used so far, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def base_config() -> dict[str, dict[str, Any]]:
    """The test server's limits: short timeouts so that slow attacks end within a test,
    and flood budgets that the bystanders' 20 messages a second fit in."""
    return {
        "chat": {
            # The bystanders' address stands for a trusted gateway; every attacker address
            # gets the per-address limits (which loopback would otherwise be spared).
            "address_limit_exempt": [BYSTANDER],
            "max_connections_per_address": 20,
            "login_failure_burst": 5,
            "login_failure_period": 30.0,
            "registration_burst": 3,
            "registration_period": 600.0,
            "history_flush_interval": 1.0,
        },
        "tls": {"handshake_timeout": 2.0},
        "line": {
            "flood_burst": 20,
            "flood_rate": 25.0,
            "flood_max_warnings": 3,
            "idle_timeout": 3.0,
            "ping_timeout": 2.0,
            # Room for the 16 KB lines of the writers that flood slow readers.
            "max_line_bytes": 16384,
        },
        "irc": {
            "flood_burst": 20,
            "flood_rate": 25.0,
            "flood_max_queue": 64,
            "registration_timeout": 3.0,
            "ping_interval": 30.0,
            "ping_timeout": 10.0,
            "sendq_bytes": 65536,
        },
        "xmpp": {
            "idle_timeout": 3.0,
            "ping_timeout": 2.0,
            "negotiation_timeout": 3.0,
            "flood_burst": 20,
            "flood_rate": 25.0,
            "flood_max_queue": 64,
            "registration": "open",
        },
    }


@dataclass
class Env:
    """One module's server and bystanders."""

    protocol: str
    server: ServerProcess
    ports: dict[str, int]
    bystanders: Bystanders
    # The same configuration, never attacked: where the control pair chats.
    unattacked: ServerProcess
    baseline: Window
    rss_start_kb: int
    log_offset: int = 0
    notes: list[str] = field(default_factory=list)
    # Every bystander latency measured during the module's tests, and the control's.
    latencies: list[float] = field(default_factory=list)
    control: list[float] = field(default_factory=list)
    # The server's run-queue wait when the window began, and each window's wait.
    wait_mark: float = 0.0
    waits: list[float] = field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    def alive(self) -> bool:
        return self.server.proc is not None and self.server.proc.poll() is None

    def rss_kb(self) -> int:
        return status_kb(self.pid, "VmRSS")

    def peak_kb(self) -> int:
        return status_kb(self.pid, "VmHWM")

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def new_log(self) -> str:
        """Server log written since the last call."""
        text = self.server.log()
        new, self.log_offset = text[self.log_offset :], len(text)
        return new

    def mark(self) -> None:
        """A test's window begins."""
        self.bystanders.mark()
        self.wait_mark = runqueue_wait(self.pid)

    def check(self, window: Window) -> None:
        """The invariants every test must leave true."""
        assert self.alive(), f"the server died:\n{self.server.log()[-3000:]}"
        starved = runqueue_wait(self.pid) - self.wait_mark
        self.waits.append(starved)
        log = self.new_log()
        assert "Traceback" not in log and "Unhandled" not in log, (
            f"the server logged an error:\n{log[-4000:]}"
        )
        peak = self.peak_kb()
        assert peak - self.rss_start_kb < RSS_GROWTH_LIMIT_KB, (
            f"server memory grew from {self.rss_start_kb} KiB to a peak of {peak} KiB"
        )
        assert window.error is None, f"a bystander failed: {window.error}"
        assert not window.lost, f"bystander messages lost: {window.lost[:20]} ({window.summary()})"
        assert window.out_of_order == 0, f"bystander messages out of order ({window.summary()})"
        self.latencies.extend(window.latencies)
        self.control.extend(window.control)
        self.check_latency(window, starved)

    def check_latency(self, window: Window, starved: float) -> None:
        """The bounds (see LATENCY_FACTOR), ``starved`` being the server's run-queue wait."""
        base = self.baseline
        machine = Window(latencies=window.control)
        problem = (
            f"bystander latency degraded: {window.summary()} (baseline {base.summary()};"
            f" unattacked server meanwhile: median {machine.median * 1000:.1f} ms,"
            f" p95 {machine.p95 * 1000:.1f} ms, worst {machine.worst * 1000:.1f} ms;"
            f" the server waited {starved * 1000:.0f} ms for a CPU)"
        )
        allowed = max(LATENCY_FACTOR * base.worst, WORST_FLOOR) + machine.worst + starved
        assert window.worst <= allowed, problem
        if len(window.latencies) < MIN_SAMPLES:
            return
        allowed = max(LATENCY_FACTOR * base.median, MEDIAN_FLOOR) + machine.median + starved
        assert window.median <= allowed, problem
        allowed = max(LATENCY_FACTOR * base.p95, P95_FLOOR) + machine.p95 + starved
        assert window.p95 <= allowed, problem

    def overall(self) -> Window:
        """All the module's bystander messages as one window."""
        return Window(
            sent=len(self.latencies),
            received=len(self.latencies),
            latencies=self.latencies,
            control=self.control,
        )


class Bystanders:
    """The chatting pair, and the control pair on ``control_port``, in their own process
    (see :mod:`tests.hostile.bystanders`)."""

    def __init__(self, protocol: str, port: int, control_port: int) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.hostile.bystanders",
                protocol,
                str(port),
                str(control_port),
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        status, detail = self._answer(30.0)
        if status != "ready":
            self.process.kill()
            raise RuntimeError(f"the bystanders did not start: {detail}")

    def _answer(self, timeout: float) -> tuple[str, Any]:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("the bystander process did not answer")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the bystander process exited ({self.process.wait()})")
        status, detail = json.loads(line)
        return status, detail

    def call(self, command: str, arg: Any = None, timeout: float = 30.0) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps([command, arg]) + "\n")
        self.process.stdin.flush()
        status, detail = self._answer(timeout)
        if status != "ok":
            raise RuntimeError(detail)
        return detail

    def mark(self) -> None:
        self.call("mark")

    def report(self) -> Window:
        return Window(**self.call("report"))

    def measure(self, seconds: float) -> Window:
        return Window(**self.call("measure", seconds))

    def stop(self) -> None:
        try:
            self.call("stop", timeout=5.0)
        except Exception:
            pass
        try:
            self.process.wait(5.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Watcher:
    """A user who watches what attackers make others see: reads in a thread, and every
    line must pass ``valid``."""

    def __init__(self, user: Any, valid: Callable[[str], bool]) -> None:
        self.user = keep(user)
        self.valid = valid
        self.problems: list[str] = []
        self.lines = 0
        self.running = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while self.running:
            try:
                line = self.user.read_line(0.5)
            except TimeoutError:
                continue
            except (Closed, OSError) as err:
                if self.running:
                    self.problems.append(f"the watcher was disconnected: {err}")
                return
            self.lines += 1
            if not self.valid(line):
                self.problems.append(repr(line))

    def check(self) -> None:
        assert not self.problems, f"the watcher saw bad lines: {self.problems[:10]}"
        assert not self.user.not_utf8, f"the watcher got non-UTF-8: {self.user.not_utf8[:5]}"

    def mark(self) -> int:
        return len(self.user.seen)

    def since(self, mark: int) -> list[str]:
        return self.user.seen[mark:]

    def wait_for(self, line: str, mark: int, timeout: float = 5.0) -> list[str]:
        """The lines seen since ``mark`` once ``line`` is among them."""
        assert wait_until(lambda: line in self.user.seen[mark:], timeout), (
            f"the watcher never saw {line!r}; it saw {self.user.seen[mark:][-10:]}"
        )
        return self.user.seen[mark:]

    def stop(self) -> None:
        self.running = False
        self.user.close()


WRITER_LINE_BYTES = 16000


def flood_until_quit(
    line_port: int,
    room: str,
    nick: str,
    *,
    keepalive: Callable[[], None],
    writers: int = 4,
    timeout: float = 30.0,
) -> tuple[str, float]:
    """Line-chat writers fill ``room`` with 16 KB lines (inside their flood budget, reading
    everything they get) until they see ``nick`` quit; returns the quit line and how long
    it took.  ``keepalive`` is called every second for the member that never reads, so
    that its idle timeout is not what ends it (it writes; it only never reads)."""
    users = [LineUser(line_port, f"{nick}w{i}", source=ATTACKER) for i in range(writers)]
    for user in users:
        user.join(room)
    stop = threading.Event()
    prefix = f"-!- {nick} quit (".encode()
    found: list[bytes] = []

    def keep_alive() -> None:
        while not stop.is_set():
            try:
                keepalive()
            except OSError:
                return  # dropped, as it should be
            stop.wait(1.0)

    def write(user: LineUser) -> None:
        sock = user.sock
        text = b"z" * WRITER_LINE_BYTES + b"\r\n"
        tail = b""
        due = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now >= due:
                sock.sendall(text)
                # At most 20 lines a second, never a catch-up burst: inside the flood budget.
                due = now + 0.05
                continue
            # Read everything, as fast as it comes, until the next line is due.
            ready, _, _ = select.select([sock], [], [], due - now)
            if ready:
                data = tail + sock.recv(1 << 20)
                at = data.find(prefix)
                if at >= 0 and b"\n" in data[at:]:
                    found.append(data[at : data.index(b"\n", at)].rstrip(b"\r"))
                tail = data[-300:]

    threads = [threading.Thread(target=write, args=(u,), daemon=True) for u in users]
    threads.append(threading.Thread(target=keep_alive, daemon=True))
    start = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        dropped = wait_until(lambda: bool(found), timeout, interval=0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
    took = time.monotonic() - start
    assert dropped, f"{nick}, who never reads, was never dropped"
    for user in users:
        user.sync()
        user.close()
    return found[0].decode(), took


class Crowd:
    """``size`` line-chat members of ``room``, from addresses of their own (20 each, the
    per-address limit), read in a thread that answers the server's probes: a big room for
    attacks that cost by its size."""

    PER_ADDRESS = 20

    def __init__(self, port: int, room: str, size: int, prefix: str = "crowd") -> None:
        self.socks: list[socket.socket] = []
        for i in range(size):
            source = f"127.0.{10 + i // self.PER_ADDRESS}.{1 + i % self.PER_ADDRESS}"
            sock = connect(port, source=source, timeout=10.0)
            sock.sendall(f"{prefix}{i}\r\n/join {room}\r\n".encode())
            self.socks.append(sock)
        # The last bytes each member received, and the members that are in the room.
        self.tails: dict[int, bytes] = {}
        self.joined: set[int] = set()
        self.needle = f"now talking in #{room}".encode()
        self.running = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert wait_until(lambda: len(self.joined) == size, 30), (
            f"{size - len(self.joined)} of the crowd did not join #{room}"
        )

    def _read(self) -> None:
        with selectors.DefaultSelector() as sel:
            for i, sock in enumerate(self.socks):
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ, i)
            while self.running:
                for key, _ in sel.select(0.1):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        data = sock.recv(1 << 16)
                    except OSError:
                        continue
                    if not data:
                        sel.unregister(sock)
                        continue
                    tail = self.tails[key.data] = self.tails.get(key.data, b"")[-200:] + data
                    if self.needle in tail:
                        self.joined.add(key.data)
                    if b"ping: are you there?" in data:
                        sock.sendall(b"\r\n")

    def close(self) -> None:
        self.running = False
        self.thread.join(5)
        for sock in self.socks:
            sock.close()


def start_env(
    tmp: Path,
    protocol: str,
    *,
    protocols: tuple[str, ...],
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Env:
    """Start the server (with ``protocols`` listening) and an unattacked one beside it (with
    ``protocol`` only), then the bystanders on ``protocol`` and their control pair."""
    config = base_config()
    for section, values in (overrides or {}).items():
        config.setdefault(section, {}).update(values)
    unattacked = ServerProcess(
        tmp.parent / f"{tmp.name}-unattacked", protocols=(protocol,), overrides=config
    ).start()
    line_tls = free_port()
    if "line" in protocols:
        config["line"]["tls_port"] = line_tls
    server = ServerProcess(tmp, protocols=protocols, overrides=config).start()
    ports = dict(server.ports)
    if "line" in protocols:
        ports["line_tls"] = line_tls
    try:
        bystanders = Bystanders(protocol, ports[protocol], unattacked.ports[protocol])
    except Exception:
        server.kill()
        unattacked.kill()
        raise
    # Let start-up work (imports, the first history flush) settle before the baseline.
    baseline = bystanders.measure(1.5)
    env = Env(
        protocol=protocol,
        server=server,
        ports=ports,
        bystanders=bystanders,
        unattacked=unattacked,
        baseline=baseline,
        rss_start_kb=status_kb(server.proc.pid, "VmRSS") if server.proc else 0,
    )
    env.new_log()
    if baseline.lost or baseline.error:
        stop_env(env)
        raise RuntimeError(f"bystanders fail with no attack at all: {baseline.summary()}")
    return env


def stop_env(env: Env) -> None:
    """Stop everything, then judge the bystanders' latency over the whole module."""
    if env.alive():
        env.notes.append(
            f"{env.protocol}: server memory {env.rss_start_kb // 1024} MiB once settled,"
            f" peak {env.peak_kb() // 1024} MiB (bound: +{RSS_GROWTH_LIMIT_KB // 1024} MiB)"
        )
    env.bystanders.stop()
    env.server.kill()
    env.unattacked.kill()
    overall = env.overall()
    OVERALL.append((env.protocol, overall, env.baseline))
    NOTES.extend(env.notes)
    # Over the whole module: as much as the most starved window was allowed.
    env.check_latency(overall, max(env.waits, default=0.0))


def wait_until(test: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if test():
            return True
        time.sleep(interval)
    return bool(test())


__all__ = [
    "ATTACKER",
    "BYSTANDER",
    "CASES",
    "VICTIM",
    "Bystanders",
    "Env",
    "count",
    "start_env",
    "stop_env",
    "wait_until",
]


def read_until(client: LineUser, done: Callable[[bytes], bool], what: str) -> bytes:
    """Everything the server sends ``client`` until ``done(data)`` or it closes (10 s at most)."""
    data = b""
    deadline = time.monotonic() + 10.0
    while not done(data):
        client.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            chunk = client.sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"{what}; got {data[-500:]!r}") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
        data += chunk
    return data
