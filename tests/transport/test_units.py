"""The transport layer's parts on their own: framing against a byte-at-a-time reference,
the flood budget and queue on a fake clock, stalls, and the loopback rule."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from protocols.line.framing import LineFramer, Negotiation, Negotiations
from protocols.transport import timers as timers_module
from protocols.transport.flood import FloodBudget, FloodQueue
from protocols.transport.framing import TOO_LONG, LineSplitter
from protocols.transport.idle import IdleTimer
from protocols.transport.peer import is_loopback, is_secure
from protocols.transport.stall import INTERVAL, InputStalls, StallWatch
from protocols.transport.timers import MIN_GAP, Timer, Timers, timers_for


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def every_split(data: bytes) -> list[list[bytes]]:
    """The stream cut at each single boundary, and cut into single bytes."""
    cuts = [[data[:i], data[i:]] for i in range(len(data) + 1)]
    return [*cuts, [data[i : i + 1] for i in range(len(data))]]


# -- lines ----------------------------------------------------------------------------------


def reference_lines(data: bytes, limit: int, *, report_at_end: bool) -> list[object]:
    """Lines one byte at a time: the rule written as plainly as possible."""
    out: list[object] = []
    buf = bytearray()
    dropping = False
    for byte in data:
        if byte == 0x0A:
            if dropping:
                dropping = False
                if report_at_end:
                    out.append(TOO_LONG)
                continue
            line = bytes(buf[:-1] if buf.endswith(b"\r") else buf)
            buf.clear()
            out.append(TOO_LONG if len(line) > limit else line)
            continue
        if dropping:
            continue
        buf.append(byte)
        if len(buf) > limit + 1:
            buf.clear()
            dropping = True
            if not report_at_end:
                out.append(TOO_LONG)
    return out


line_streams = st.lists(
    st.sampled_from([b"\n", b"\r", b"\r\n", b"a", b"bc", b"defgh"]) | st.binary(max_size=6),
    max_size=80,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(line_streams, st.integers(1, 12), st.booleans())
def test_line_splitter_matches_the_reference_at_every_split(
    data: bytes, limit: int, at_end: bool
) -> None:
    expected = reference_lines(data, limit, report_at_end=at_end)
    for pieces in every_split(data):
        splitter = LineSplitter(limit, report_at_end=at_end)
        got = [item for piece in pieces for item in splitter.feed(piece)]
        assert got == expected
        assert splitter.pending <= limit + 1


# -- telnet -----------------------------------------------------------------------------------


def reference_telnet(data: bytes, limit: int) -> tuple[list[object], int]:
    """Telnet one byte at a time (items, and how many commands there were)."""
    text = bytearray()
    commands = 0
    state = "data"
    verb = 0
    sub_len = 0
    sub_iac = False

    # The text is cut into lines at the end (line cutting is tested above); negotiations
    # keep their place among the lines by marking where in the text they came.
    marks: list[tuple[int, Negotiation]] = []
    i = 0
    while i < len(data):
        byte = data[i]
        i += 1
        if state == "data":
            if byte == 0xFF:
                state = "iac"
            else:
                text.append(byte)
        elif state == "iac":
            if byte == 0xFF:
                text.append(0xFF)
                state = "data"
            elif 0xFB <= byte <= 0xFE:
                verb = byte
                state = "option"
            elif byte == 0xFA:
                commands += 1
                sub_len = 0
                sub_iac = False
                state = "sub"
            else:
                commands += 1
                state = "data"
        elif state == "option":
            commands += 1
            marks.append((len(text), Negotiation(verb, byte)))
            state = "data"
        else:  # sub
            if sub_iac and byte == 0xF0:
                state = "data"
                continue
            if sub_len >= limit:
                state = "data"
                i -= 1
                continue
            sub_len += 1
            sub_iac = byte == 0xFF
    # Lines as the text is cut, each negotiation after the lines complete before its mark.
    out: list[object] = []
    splitter_items: list[tuple[int, object]] = []
    splitter = LineSplitter(limit)
    for pos in range(len(text) + 1):
        for mark_pos, neg in marks:
            if mark_pos == pos:
                splitter_items.append((pos, neg))
        if pos < len(text):
            for item in splitter.feed(bytes(text[pos : pos + 1])):
                splitter_items.append((pos, item))
    for _pos, item in splitter_items:
        if isinstance(item, bytes):
            item = item.replace(b"\x00", b"").replace(b"\r", b"")
        out.append(item)
    return out, commands


telnet_streams = st.lists(
    st.sampled_from(
        [b"\xff", b"\xfa", b"\xf0", b"\xfb", b"\xfd", b"\xf1", b"\n", b"\r", b"\x00", b"ab"]
    )
    | st.binary(max_size=5),
    max_size=60,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(telnet_streams, st.integers(1, 10))
def test_telnet_framer_matches_the_reference_at_every_split(data: bytes, limit: int) -> None:
    expected, commands = reference_telnet(data, limit)
    for pieces in every_split(data):
        framer = LineFramer(limit)
        got: list[object] = []
        counted = 0
        for piece in pieces:
            for item in framer.feed(piece):
                got.extend(item.requests() if isinstance(item, Negotiations) else [item])
            counted += framer.commands
        assert got == expected
        assert counted == commands


def test_telnet_command_runs_are_counted_in_bulk() -> None:
    framer = LineFramer(100)
    nops = b"\xff\xf1" * 30_000
    assert framer.feed(b"hi" + nops + b" there\n") == [b"hi there"]
    assert framer.commands == 30_000
    items = framer.feed(b"\xff\xfd\x01" * 1000)
    assert framer.commands == 1000
    assert items == [Negotiations(b"\xff\xfd\x01" * 1000)]
    assert items[0].requests() == [Negotiation(0xFD, 1)] * 1000


# -- flood ------------------------------------------------------------------------------------


def test_flood_queue_runs_in_order_within_the_budget() -> None:
    clock = Clock()
    ran: list[int] = []
    queue: FloodQueue[int] = FloodQueue(clock, FloodBudget(3, 1.0, clock), 5, ran.append)
    for i in range(6):
        queue.push(i)
    queue.drain()
    assert ran == [0, 1, 2]
    assert len(queue) == 3 and not queue.overflowing
    clock.advance(1)
    assert ran == [0, 1, 2, 3]
    clock.advance(2)
    assert ran == list(range(6))
    assert len(queue) == 0


def test_charge_puts_the_client_in_debt() -> None:
    clock = Clock()
    ran: list[str] = []
    queue: FloodQueue[str] = FloodQueue(clock, FloodBudget(5, 1.0, clock), 10, ran.append)
    queue.push("costly")
    queue.drain()
    queue.charge(8)  # what the command cost beyond its turn: 9 tokens in all
    queue.push("next")
    queue.drain()
    assert ran == ["costly"]
    clock.advance(4.5)
    assert ran == ["costly"]
    clock.advance(0.6)
    assert ran == ["costly", "next"]


def test_held_queue_waits_and_overflow_is_reported() -> None:
    clock = Clock()
    ran: list[int] = []
    queue: FloodQueue[int] = FloodQueue(clock, None, 2, ran.append)
    queue.hold()
    for i in range(3):
        queue.push(i)
    queue.drain()
    assert ran == [] and queue.overflowing
    queue.release()
    queue.drain()
    assert ran == [0, 1, 2]
    queue.push(9)
    queue.clear()
    queue.drain()
    assert ran == [0, 1, 2]


class Monotonic:
    """The process's own clock, moved by hand (a stall: it moves and no timer runs)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_stall_of_the_server_is_credited_not_a_burst() -> None:
    clock = Clock()
    mono = Monotonic()
    watch = StallWatch(clock, mono)
    budget = FloodBudget(4, 10.0, clock, watch)
    for _ in range(4):  # a second of the server running as usual
        mono.now += INTERVAL
        clock.advance(INTERVAL)
    assert budget.level() == 4
    # The process does not run for two seconds: no timer fires, then a read comes.
    mono.now += 2.0
    clock.rightNow += 2.0
    assert budget.take(20)  # what a client at 10/s sent meanwhile, on top of the burst
    assert budget.level() == pytest.approx(4)
    # The credit is given once, even when the late heartbeat sees the same stall.
    clock.advance(INTERVAL)
    mono.now += INTERVAL
    assert budget.level() == pytest.approx(4)


def test_a_relayed_clients_wait_is_credited_once_and_a_relays_jitter_is_not() -> None:
    clock = Clock()
    mono = Monotonic()
    stalls = InputStalls(StallWatch(clock, mono))
    budget = FloodBudget(4, 10.0, clock, stalls)

    def run(seconds: float) -> None:
        """The server running as usual."""
        for _ in range(round(seconds / INTERVAL)):
            mono.now += INTERVAL
            clock.advance(INTERVAL)

    run(1.0)
    # The usual jitter of a relay is no wait: the burst, no more.
    stalls.delayed(0.2, clock.seconds())
    assert not budget.take(5)
    run(2.0)
    # Bytes that waited three seconds in the cluster arrive, the last second of which the
    # server itself stood still: three seconds are credited, not four.
    mono.now += 1.0
    clock.rightNow += 1.0
    stalls.delayed(3.0, clock.seconds())
    assert budget.take(4 + 30)
    assert budget.level() == pytest.approx(0)
    # A second piece of the same wait, arriving with the first, adds nothing.
    stalls.delayed(2.9, clock.seconds())
    assert budget.level() == pytest.approx(0)


def test_a_test_clock_jumping_ahead_is_no_stall() -> None:
    clock = Clock()
    budget = FloodBudget(4, 10.0, clock, StallWatch(clock))
    clock.advance(60)
    clock.rightNow += 60
    assert not budget.take(5)
    assert budget.take(4)


def test_an_idle_client_gets_no_more_than_its_burst() -> None:
    clock = Clock()
    budget = FloodBudget(4, 10.0, clock, StallWatch(clock))
    clock.advance(60)
    assert not budget.take(5)
    assert budget.take(4)


# -- peers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("2001:db8::1", False),
        ("", False),
        ("not an address", False),
    ],
)
def test_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback
    assert is_secure(False, address) is loopback
    assert is_secure(True, address)


# -- the idle timer ---------------------------------------------------------------------------


class Owner:
    """An IdleOwner that writes down what the timer asked of it."""

    def __init__(self, timer_clock: Clock) -> None:
        self.events: list[tuple[float, str]] = []
        self.clock = timer_clock

    def idle_after(self) -> float:
        return 10.0

    def answer_within(self) -> float:
        return 3.0

    def send_probe(self) -> None:
        self.events.append((self.clock.seconds(), "probe"))

    def no_answer(self, silent: float) -> None:
        self.events.append((self.clock.seconds(), f"no answer after {silent:g}"))

    def deadline_passed(self) -> None:
        self.events.append((self.clock.seconds(), "deadline"))


def test_idle_timer_probes_a_silence_and_waits_for_the_answer() -> None:
    clock = Clock()
    owner = Owner(clock)
    timer = IdleTimer(clock, owner)
    timer.start()
    clock.advance(6)
    timer.touch(clock.seconds())  # input: the silence starts again, no re-arm needed
    clock.pump([1] * 9)
    assert owner.events == []
    clock.advance(1)
    assert owner.events == [(16.0, "probe")]
    clock.advance(2)
    timer.touch(clock.seconds())  # the answer
    clock.pump([1] * 10)
    assert owner.events == [(16.0, "probe"), (28.0, "probe")]
    clock.advance(3)
    assert owner.events[-1] == (31.0, "no answer after 13")
    timer.stop()
    clock.advance(100)
    assert len(owner.events) == 3


def test_idle_timer_deadline_and_quiet_moment() -> None:
    clock = Clock()
    owner = Owner(clock)
    quiet: list[float] = []
    timer = IdleTimer(clock, owner, quiet_after=1.0, on_quiet=lambda: quiet.append(clock.seconds()))
    timer.start(deadline=5.0)
    timer.touch(clock.seconds())
    clock.advance(1)
    assert quiet == [1.0]
    clock.advance(2)
    timer.touch(clock.seconds())
    clock.advance(1)
    assert quiet == [1.0, 4.0]
    clock.advance(1)
    assert owner.events == [(5.0, "deadline")]
    clock.pump([1] * 20)
    assert owner.events[1] == (13.0, "probe")


# -- shared timers ----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    delays=st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=40),
    cancel=st.sets(st.integers(min_value=0, max_value=39)),
    steps=st.lists(st.integers(min_value=1, max_value=90), min_size=1, max_size=30),
)
def test_timers_run_once_in_order_never_early_and_at_most_min_gap_late(
    delays: list[int], cancel: set[int], steps: list[int]
) -> None:
    # Delays and clock steps in hundredths of a second: timers close together and far apart.
    clock = Clock()
    timers = Timers(clock)
    ran: list[tuple[int, float]] = []
    handles = [
        timers.call_later(d / 100, lambda i=i: ran.append((i, clock.seconds())))
        for i, d in enumerate(delays)
    ]
    for i in cancel:
        if i < len(handles):
            handles[i].cancel()
    live = [i for i in range(len(delays)) if i not in cancel]
    assert timers.pending() == len(live)
    # Whatever the steps, the reactor holds one call for all of them at the most.
    for step in [*steps, *[1] * 500]:
        clock.advance(step / 100)
        assert len(clock.getDelayedCalls()) <= 1
    assert sorted(i for i, _ in ran) == live, "each live timer runs once, a cancelled one never"
    assert [i for i, _ in ran] == sorted(live, key=lambda i: (delays[i], i)), "in order of due"
    for i, at in ran:
        due = delays[i] / 100
        assert at >= due - 1e-9, "never early"
        # Late by the gap at most, and by as much as the test's clock jumps past a time.
        assert at <= due + MIN_GAP + max(steps) / 100 + 1e-9
    assert timers.pending() == 0
    assert clock.getDelayedCalls() == []


def test_a_lone_timer_runs_at_its_time_exactly() -> None:
    clock = Clock()
    timers = Timers(clock)
    ran: list[float] = []
    timers.call_later(5, lambda: ran.append(clock.seconds()))
    clock.advance(4.999)
    assert ran == []
    clock.advance(0.001)
    assert ran == [5.0]


def test_timers_close_together_share_one_run() -> None:
    clock = Clock()
    timers = Timers(clock)
    ran: list[tuple[int, float]] = []
    timers.call_later(1.0, lambda: ran.append((0, clock.seconds())))
    timers.call_later(1.01, lambda: ran.append((1, clock.seconds())))
    timers.call_later(1.02, lambda: ran.append((2, clock.seconds())))
    clock.pump([0.005] * 300)
    # The first at its time; the two due within the gap after it, together, one gap later.
    at = pytest.approx(1.0 + MIN_GAP, abs=0.006)
    assert ran == [(0, pytest.approx(1.0)), (1, at), (2, at)]


def test_a_timer_may_cancel_or_set_another_while_they_run() -> None:
    clock = Clock()
    timers = Timers(clock)
    ran: list[str] = []
    later: list[Timer] = []

    def first() -> None:
        ran.append("first")
        later[0].cancel()
        timers.call_later(0, lambda: ran.append("set by first"))

    timers.call_later(1, first)
    later.append(timers.call_later(1, lambda: ran.append("cancelled")))
    timers.call_later(1, lambda: ran.append("third"))
    clock.advance(1)
    # One set while they run waits for them (the test clock runs it within the same advance).
    assert ran == ["first", "third", "set by first"]


def test_a_failing_timer_does_not_stop_the_others() -> None:
    clock = Clock()
    timers = Timers(clock)
    ran: list[int] = []

    def fail() -> None:
        raise RuntimeError("a broken timer")

    timers.call_later(1, fail)
    timers.call_later(1, lambda: ran.append(1))
    clock.advance(1)
    assert ran == [1]


def test_cancelled_timers_do_not_pile_up() -> None:
    clock = Clock()
    timers = Timers(clock)
    keep = timers.call_later(1000, lambda: None)
    for _ in range(10_000):
        timers.call_later(60, lambda: None).cancel()
    assert timers.pending() == 1
    assert len(timers._heap) < 600  # rebuilt without them, again and again
    keep.cancel()
    assert timers_for(clock) is timers_for(clock)


def test_many_timers_due_at_once_let_the_reactor_serve_input_between_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each timer's slice is used up at once: the others wait for the reactor's next turn,
    # and what the reactor has to do meanwhile (here, a call the first timer made) comes first.
    monkeypatch.setattr(timers_module, "RUN_BUDGET", -1.0)
    clock = Clock()
    timers = Timers(clock)
    ran: list[str] = []

    def first() -> None:
        ran.append("t0")
        clock.callLater(0, ran.append, "reactor")

    timers.call_later(1, first)
    for i in range(1, 4):
        timers.call_later(1, ran.append, f"t{i}")
    timers.call_later(1, ran.append, "cancelled").cancel()
    clock.advance(1)
    assert ran == ["t0", "reactor", "t1", "t2", "t3"]
    assert timers.pending() == 0


def test_timers_due_at_once_run_in_one_turn_within_the_budget() -> None:
    clock = Clock()
    timers = Timers(clock)
    ran: list[str] = []

    def first() -> None:
        ran.append("t0")
        clock.callLater(0, ran.append, "reactor")

    timers.call_later(1, first)
    for i in range(1, 4):
        timers.call_later(1, ran.append, f"t{i}")
    clock.advance(1)
    assert ran == ["t0", "t1", "t2", "t3", "reactor"]
