"""A well-behaved pair of users who keep chatting in a room while the battery attacks.

The pair runs in its own process so that what it measures is the server, not the test
process (whose threads would otherwise wait for the GIL behind hypothesis and the
attackers).  One user says ``calm <seq>`` in the room every 50 ms; the other times each
arrival.  The test process talks to it over a pipe: ``mark`` starts a window, ``report``
ends it and answers with what arrived in it (latencies, anything lost or out of order).
A control pair chats the same way on a second server of the same configuration that
nobody attacks: its latencies over the same window are what the machine's load alone does.
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.hostile.clients import (
    BYSTANDER,
    MUC_DOMAIN,
    IrcUser,
    LineUser,
    XmppClient,
    irc_command,
    local,
    xmpp_user,
)

INTERVAL = 0.05
ROOM = "calm"
SENDER = "calm_a"
RECEIVER = "calm_b"
PASSWORD = "calm-secret-1"
# How long a message may take before the report calls it lost.
LOSS_WAIT = 5.0


@dataclass
class Window:
    """What a report answers: counts, latencies (seconds) and losses of one window."""

    sent: int = 0
    received: int = 0
    lost: list[int] = field(default_factory=list)
    out_of_order: int = 0
    latencies: list[float] = field(default_factory=list)
    error: str | None = None
    # The latencies of the control pair (on a server nobody attacks) over the same time.
    control: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.latencies) if self.latencies else 0.0

    @property
    def p95(self) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]

    @property
    def worst(self) -> float:
        return max(self.latencies, default=0.0)

    def summary(self) -> str:
        return (
            f"{self.received}/{self.sent} arrived, lost {len(self.lost)},"
            f" median {self.median * 1000:.1f} ms, p95 {self.p95 * 1000:.1f} ms,"
            f" worst {self.worst * 1000:.1f} ms"
        )


class _Pair:
    """Two connected users of one protocol; subclasses say how to chat in that protocol."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: dict[int, float] = {}
        self.arrived: dict[int, float] = {}
        self.order: list[int] = []
        self.error: str | None = None
        self.stopping = False

    def say(self, seq: int) -> None:
        raise NotImplementedError

    def read_sender(self) -> None:
        raise NotImplementedError

    def read_receiver(self) -> None:
        raise NotImplementedError

    def keepalive(self) -> None:
        """The receiver never speaks otherwise: keep its idle timer happy."""

    def arrival(self, seq: int) -> None:
        now = time.monotonic()
        with self.lock:
            if seq not in self.arrived:
                self.arrived[seq] = now
                self.order.append(seq)

    def _guard(self, what: str, loop: Any) -> None:
        try:
            loop()
        except Exception:
            if not self.stopping:
                self.error = f"{what}: {traceback.format_exc(limit=4)}"

    def start(self) -> None:
        for name, loop in (
            ("sender", self._send_loop),
            ("sender reader", self.read_sender),
            ("receiver reader", self.read_receiver),
        ):
            threading.Thread(target=self._guard, args=(name, loop), daemon=True).start()

    def _send_loop(self) -> None:
        seq = 0
        due = time.monotonic()
        last_keepalive = due
        while not self.stopping:
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            with self.lock:
                self.sent[seq] = time.monotonic()
            self.say(seq)
            seq += 1
            due += INTERVAL
            if due - last_keepalive > 1.0:
                last_keepalive = due
                self.keepalive()

    def next_seq(self) -> int:
        with self.lock:
            return len(self.sent)

    def window(self, start: int, end: int) -> Window:
        deadline = time.monotonic() + LOSS_WAIT
        wanted = range(start, end)
        while time.monotonic() < deadline and self.error is None:
            with self.lock:
                if all(seq in self.arrived for seq in wanted):
                    break
            time.sleep(0.02)
        with self.lock:
            result = Window(sent=len(wanted), error=self.error)
            result.lost = [seq for seq in wanted if seq not in self.arrived]
            result.received = len(wanted) - len(result.lost)
            result.latencies = [
                self.arrived[seq] - self.sent[seq] for seq in wanted if seq in self.arrived
            ]
            seen = [seq for seq in self.order if start <= seq < end]
            result.out_of_order = sum(1 for a, b in itertools.pairwise(seen) if b < a)
        return result


def _seq_of(text: str) -> int | None:
    word, _, rest = text.partition(" ")
    if word != "calm" or not rest.isdigit():
        return None
    return int(rest)


class LinePair(_Pair):
    def __init__(self, port: int) -> None:
        super().__init__()
        self.a = LineUser(port, SENDER, source=BYSTANDER)
        self.b = LineUser(port, RECEIVER, source=BYSTANDER)
        self.a.join(ROOM)
        self.b.join(ROOM)
        self.prefix = f"[#{ROOM}] <{SENDER}> "

    def say(self, seq: int) -> None:
        with self.lock:
            self.a.send(f"calm {seq}\r\n".encode())

    def keepalive(self) -> None:
        self.b.send(b"\r\n")

    def read_sender(self) -> None:
        while not self.stopping:
            try:
                self.a.read_line(1.0)
            except TimeoutError:
                continue

    def read_receiver(self) -> None:
        while not self.stopping:
            try:
                line = self.b.read_line(1.0)
            except TimeoutError:
                continue
            if line.startswith(self.prefix):
                seq = _seq_of(line[len(self.prefix) :])
                if seq is not None:
                    self.arrival(seq)

    def close(self) -> None:
        self.a.close()
        self.b.close()


class IrcPair(_Pair):
    def __init__(self, port: int) -> None:
        super().__init__()
        self.a = IrcUser(port, SENDER, source=BYSTANDER)
        self.b = IrcUser(port, RECEIVER, source=BYSTANDER)
        self.a.join(f"#{ROOM}")
        self.b.join(f"#{ROOM}")

    def say(self, seq: int) -> None:
        with self.lock:
            self.a.send(f"PRIVMSG #{ROOM} :calm {seq}\r\n".encode())

    def keepalive(self) -> None:
        self.b.send(b"PING :keepalive\r\n")

    def read_sender(self) -> None:
        while not self.stopping:
            try:
                self.a.read_line(1.0)
            except TimeoutError:
                continue

    def read_receiver(self) -> None:
        while not self.stopping:
            try:
                line = self.b.read_line(1.0)
            except TimeoutError:
                continue
            if f":{SENDER}!" not in line:
                continue
            command, params = irc_command(line)
            if command == "PRIVMSG" and len(params) == 2 and params[0] == f"#{ROOM}":
                seq = _seq_of(params[1])
                if seq is not None:
                    self.arrival(seq)

    def close(self) -> None:
        self.a.close()
        self.b.close()


class XmppPair(_Pair):
    def __init__(self, port: int) -> None:
        super().__init__()
        self.a = xmpp_user(port, SENDER, PASSWORD, source=BYSTANDER, register=True)
        self.b = xmpp_user(port, RECEIVER, PASSWORD, source=BYSTANDER, register=True)
        self.a.join_room(ROOM, SENDER)
        self.b.join_room(ROOM, RECEIVER)
        self.a.on_element = lambda el: self._chores(self.a, el)
        self.b.on_element = self._receive
        self.source = f"{ROOM}@{MUC_DOMAIN}/{SENDER}"

    def _chores(self, client: XmppClient, el: Any) -> bool:
        if local(el) == "iq" and el.get("type") == "get":
            # The server's keep-alive ping (and anything else asked of us): answer it.
            with self.lock:
                client.send(
                    f"<iq type='result' id='{el.get('id') or ''}' to='{el.get('from') or ''}'/>"
                )
        return True

    def _receive(self, el: Any) -> bool:
        if local(el) == "message" and (el.get("from") or "").lower() == self.source:
            body = el.findtext("{jabber:client}body")
            seq = _seq_of(body or "")
            if seq is not None:
                self.arrival(seq)
            return True
        return self._chores(self.b, el)

    def say(self, seq: int) -> None:
        with self.lock:
            self.a.send(
                f"<message type='groupchat' to='{ROOM}@{MUC_DOMAIN}'><body>calm {seq}</body>"
                "</message>"
            )

    def keepalive(self) -> None:
        with self.lock:
            self.b.send(b" ")

    def _read(self, client: XmppClient) -> None:
        while not self.stopping:
            try:
                client._fill(time.monotonic() + 1.0)
            except TimeoutError:
                continue

    def read_sender(self) -> None:
        self._read(self.a)

    def read_receiver(self) -> None:
        self._read(self.b)

    def close(self) -> None:
        self.a.close()
        self.b.close()


PAIRS: dict[str, type[Any]] = {"line": LinePair, "irc": IrcPair, "xmpp": XmppPair}


def serve(protocol: str, port: int, control_port: int) -> None:
    """The bystander process: set up the pair (and the control pair on ``control_port``),
    then answer commands, one JSON line each way on stdin and stdout."""

    def answer(status: str, detail: Any) -> None:
        sys.stdout.write(json.dumps([status, detail]) + "\n")
        sys.stdout.flush()

    try:
        pair = PAIRS[protocol](port)
        control = PAIRS[protocol](control_port)
    except Exception:
        answer("error", traceback.format_exc())
        return
    pair.start()
    control.start()
    answer("ready", None)

    def window(begin: tuple[int, int]) -> tuple[dict[str, Any], tuple[int, int]]:
        end = (pair.next_seq(), control.next_seq())
        result = pair.window(begin[0], end[0])
        result.control = control.window(begin[1], end[1]).latencies
        return asdict(result), end

    start = (0, 0)
    for line in sys.stdin:
        command, arg = json.loads(line)
        if command == "mark":
            start = (pair.next_seq(), control.next_seq())
            answer("ok", start[0])
        elif command == "report":
            result, start = window(start)
            answer("ok", result)
        elif command == "measure":
            begin = (pair.next_seq(), control.next_seq())
            time.sleep(arg)
            answer("ok", window(begin)[0])
        elif command == "stop":
            break
    for each in (pair, control):
        each.stopping = True
        each.close()
    answer("ok", None)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
